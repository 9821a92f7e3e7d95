//! Releasing generated text while it is generated, without ever taking back
//! what was sent: text that could still become a stop sequence, a half
//! decoded character, or (when completions end at a sentence end) an
//! unfinished sentence is held back until it is settled.

use super::sentences::{last_settled_sentence_end, trim_to_sentence_end};
use super::stop::truncate_at_stop;

/// Decoding of a partial UTF-8 sequence.
const REPLACEMENT: char = '\u{FFFD}';

pub struct TextStream {
    stop: Vec<String>,
    stop_at_sentence_end: bool,
    /// Bytes of the text already released.
    released: usize,
}

/// What one update found.
#[derive(Debug, PartialEq, Eq)]
pub struct Update {
    /// Newly settled text, to send now (may be empty).
    pub delta: String,
    /// A stop sequence appeared: the completion is over.
    pub stopped: bool,
}

impl TextStream {
    pub fn new(stop: Vec<String>, stop_at_sentence_end: bool) -> TextStream {
        TextStream {
            stop,
            stop_at_sentence_end,
            released: 0,
        }
    }

    /// Takes the whole text decoded so far and returns what can be released.
    pub fn update(&mut self, text: &str) -> Update {
        let (kept, stopped) = truncate_at_stop(text, &self.stop);
        if stopped {
            return Update {
                delta: self.finish(kept),
                stopped: true,
            };
        }
        let mut settled = text.len() - self.longest_partial_stop(text);
        settled = text[..settled].trim_end_matches(REPLACEMENT).len();
        if self.stop_at_sentence_end {
            settled = last_settled_sentence_end(&text[..settled]).unwrap_or(0);
        }
        Update {
            delta: self.release(text, settled),
            stopped: false,
        }
    }

    /// The generation ended with `text` (already cut at a stop sequence if
    /// one was found): releases the rest, trimmed to a sentence end if asked.
    pub fn finish(&mut self, text: &str) -> String {
        let end = if self.stop_at_sentence_end {
            trim_to_sentence_end(text).map_or(text.len(), str::len)
        } else {
            text.len()
        };
        self.release(text, end)
    }

    fn release(&mut self, text: &str, end: usize) -> String {
        if end <= self.released {
            return String::new();
        }
        let delta = text[self.released..end].to_string();
        self.released = end;
        delta
    }

    /// The length of the longest end of `text` that begins some stop sequence.
    fn longest_partial_stop(&self, text: &str) -> usize {
        self.stop
            .iter()
            .flat_map(|stop| {
                stop.char_indices()
                    .skip(1)
                    .map(|(cut, _)| &stop[..cut])
                    .filter(|prefix| text.ends_with(prefix))
                    .map(str::len)
                    .collect::<Vec<_>>()
            })
            .max()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds growing prefixes of `pieces` and returns the deltas and the final text.
    fn run(stream: &mut TextStream, pieces: &[&str]) -> (Vec<String>, bool) {
        let mut text = String::new();
        let mut deltas = Vec::new();
        for piece in pieces {
            text.push_str(piece);
            let update = stream.update(&text);
            deltas.push(update.delta);
            if update.stopped {
                return (deltas, true);
            }
        }
        deltas.push(stream.finish(&text));
        (deltas, false)
    }

    #[test]
    fn plain_text_is_released_as_it_comes() {
        let mut stream = TextStream::new(vec![], false);
        let (deltas, stopped) = run(&mut stream, &[" a", " b", " c"]);
        assert_eq!(deltas, [" a", " b", " c", ""]);
        assert!(!stopped);
    }

    #[test]
    fn a_possible_stop_sequence_is_held_back() {
        let mut stream = TextStream::new(vec!["END".into()], false);
        let (deltas, stopped) = run(&mut stream, &["one E", "N", "X two", " E", "ND more"]);
        assert_eq!(deltas, ["one ", "", "ENX two", " ", ""]);
        assert!(stopped);
        assert_eq!(deltas.concat(), "one ENX two ");
    }

    #[test]
    fn half_characters_wait_for_their_other_half() {
        let mut stream = TextStream::new(vec![], false);
        assert_eq!(stream.update("caf\u{FFFD}").delta, "caf");
        assert_eq!(stream.update("café").delta, "é");
    }

    #[test]
    fn sentence_mode_releases_whole_sentences() {
        let mut stream = TextStream::new(vec![], true);
        let (deltas, _) = run(&mut stream, &[" It is.", " Then", " more. And", " a tail"]);
        assert_eq!(deltas, ["", " It is.", " Then more.", "", ""]);
    }

    #[test]
    fn sentence_mode_keeps_text_without_any_sentence_end() {
        let mut stream = TextStream::new(vec![], true);
        let (deltas, _) = run(&mut stream, &[" no", " end"]);
        assert_eq!(deltas.concat(), " no end");
    }

    #[test]
    fn released_text_equals_the_finished_text() {
        let pieces = [" Dr.", " Who", " said", " so.", " Yes", "!\n", "x", "yz"];
        for stops in [vec![], vec!["yz".to_string()], vec!["so".to_string()]] {
            for sentences in [false, true] {
                let mut stream = TextStream::new(stops.clone(), sentences);
                let (deltas, _) = run(&mut stream, &pieces);
                let whole = pieces.concat();
                let (cut, _) = truncate_at_stop(&whole, &stops);
                let expected = if sentences {
                    trim_to_sentence_end(cut).unwrap_or(cut)
                } else {
                    cut
                };
                assert_eq!(
                    deltas.concat(),
                    expected,
                    "stops {stops:?}, sentences {sentences}"
                );
            }
        }
    }
}
