//! Releasing generated text while it is generated, without ever taking back
//! what was sent: text that could still become a stop sequence or (when
//! completions end at a sentence end) an unfinished sentence is held back
//! until it is settled. Half characters never get here: the incremental
//! decoder (`generation::detokenize`) holds them back.

use super::sentences::{last_settled_sentence_end, trim_to_sentence_end};
use super::stop::truncate_at_stop;

pub struct TextStream {
    stop: Vec<String>,
    /// Bytes of the longest stop sequence.
    longest_stop: usize,
    stop_at_sentence_end: bool,
    /// The text so far (cut before a stop sequence once one appeared).
    text: String,
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
            longest_stop: stop.iter().map(String::len).max().unwrap_or(0),
            stop,
            stop_at_sentence_end,
            text: String::new(),
            released: 0,
        }
    }

    /// Takes the text the last token added and returns what can be released.
    /// Looks only at the new text and the few bytes before it that a stop
    /// sequence could start in, so a step costs the same at any length.
    pub fn push(&mut self, new_text: &str) -> Update {
        if self.append(new_text) {
            return Update {
                delta: self.release_rest(),
                stopped: true,
            };
        }
        let text = &self.text;
        let mut settled = text.len() - self.longest_partial_stop();
        if self.stop_at_sentence_end {
            // Released text always ends at a settled sentence end, so the
            // search starts there, not at the beginning.
            settled = last_settled_sentence_end(&text[self.released.min(settled)..settled])
                .map_or(0, |end| self.released + end);
        }
        Update {
            delta: self.release(settled),
            stopped: false,
        }
    }

    /// The generation ended; `tail` is its last text not yet pushed. Returns
    /// the rest to release: cut at a stop sequence, trimmed to a sentence end
    /// if asked.
    pub fn finish(&mut self, tail: &str) -> String {
        self.append(tail);
        self.release_rest()
    }

    /// Appends `new_text`; true (and the text cut) if a stop sequence now
    /// appears. One that did not appear before must end in the new text.
    fn append(&mut self, new_text: &str) -> bool {
        let before = self.text.len();
        self.text.push_str(new_text);
        let mut from = before.saturating_sub(self.longest_stop.saturating_sub(1));
        while !self.text.is_char_boundary(from) {
            from -= 1;
        }
        let (kept, stopped) = truncate_at_stop(&self.text[from..], &self.stop);
        if stopped {
            let cut = from + kept.len();
            self.text.truncate(cut);
        }
        stopped
    }

    fn release_rest(&mut self) -> String {
        let text = &self.text;
        let end = if self.stop_at_sentence_end {
            trim_to_sentence_end(text).map_or(text.len(), str::len)
        } else {
            text.len()
        };
        self.release(end)
    }

    fn release(&mut self, end: usize) -> String {
        if end <= self.released {
            return String::new();
        }
        let delta = self.text[self.released..end].to_string();
        self.released = end;
        delta
    }

    /// The length of the longest end of the text that begins some stop sequence.
    fn longest_partial_stop(&self) -> usize {
        let text = &self.text;
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

    /// Feeds `pieces` one by one and returns the deltas and whether it stopped.
    fn run(stream: &mut TextStream, pieces: &[&str]) -> (Vec<String>, bool) {
        let mut deltas = Vec::new();
        for piece in pieces {
            let update = stream.push(piece);
            deltas.push(update.delta);
            if update.stopped {
                return (deltas, true);
            }
        }
        deltas.push(stream.finish(""));
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
