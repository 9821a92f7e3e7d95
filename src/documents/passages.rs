//! Cutting a document into passages for retrieval: paragraphs, a heading
//! kept with the paragraph under it, and a paragraph longer than the limit
//! cut between sentences. Each passage is a span of the original text, so
//! an answer found in it maps back to the document by adding its start.

use crate::text::sentences::split_sentences;

/// A span of a document, in bytes (for slicing) and in code points (what
/// the API reports).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Passage {
    pub byte_start: usize,
    pub byte_end: usize,
    pub start: usize,
    pub end: usize,
}

impl Passage {
    pub fn text<'a>(&self, document: &'a str) -> &'a str {
        &document[self.byte_start..self.byte_end]
    }
}

/// The passages of `text`, in order, none longer than `max_chars` code
/// points unless a single sentence is (a sentence is never cut).
pub fn split(text: &str, max_chars: usize) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut heading: Option<usize> = None;
    for (start, end) in paragraphs(text) {
        let paragraph = &text[start..end];
        if is_heading(paragraph) {
            // Consecutive headings: the outermost starts the passage.
            heading.get_or_insert(start);
            continue;
        }
        let from = heading.take().unwrap_or(start);
        if chars(&text[from..end]) <= max_chars {
            spans.push((from, end));
        } else {
            cut_between_sentences(text, from, start, end, max_chars, &mut spans);
        }
    }
    if let Some(start) = heading {
        // A document that ends with a heading keeps it as a passage.
        spans.push((start, text.trim_end().len().max(start)));
    }
    spans
}

/// Byte spans converted to passages with code point offsets too.
pub fn passages(text: &str, max_chars: usize) -> Vec<Passage> {
    let spans = split(text, max_chars);
    let mut passages = Vec::with_capacity(spans.len());
    let (mut byte, mut point) = (0, 0);
    let mut advance = |to: usize| {
        point += chars(&text[byte..to]);
        byte = to;
        point
    };
    for (byte_start, byte_end) in spans {
        let start = advance(byte_start);
        let end = advance(byte_end);
        passages.push(Passage {
            byte_start,
            byte_end,
            start,
            end,
        });
    }
    passages
}

fn chars(text: &str) -> usize {
    text.chars().count()
}

fn is_heading(paragraph: &str) -> bool {
    paragraph.starts_with('#') && !paragraph.contains('\n')
}

/// Byte spans of the paragraphs: runs of non-blank lines, trimmed.
fn paragraphs(text: &str) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut current: Option<(usize, usize)> = None;
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let body = line.trim_end();
        if body.trim_start().is_empty() {
            spans.extend(current.take());
        } else {
            let lead = body.len() - body.trim_start().len();
            let end = offset + body.len();
            current = Some(match current {
                Some((start, _)) => (start, end),
                None => (offset + lead, end),
            });
        }
        offset += line.len();
    }
    spans.extend(current);
    spans
}

/// Cuts the paragraph `body_start..end` (with a heading from `from`) into
/// runs of whole sentences of at most `max_chars`.
fn cut_between_sentences(
    text: &str,
    from: usize,
    body_start: usize,
    end: usize,
    max_chars: usize,
    spans: &mut Vec<(usize, usize)>,
) {
    let body = &text[body_start..end];
    let base = body.as_ptr() as usize;
    let mut run: Option<(usize, usize)> = if from < body_start {
        Some((from, from + text[from..body_start].trim_end().len()))
    } else {
        None
    };
    for segment in split_sentences(body) {
        if segment.sentence.is_empty() {
            continue;
        }
        let start = body_start + (segment.sentence.as_ptr() as usize - base);
        let stop = start + segment.sentence.len();
        run = match run {
            Some((run_start, _)) if chars(&text[run_start..stop]) <= max_chars => {
                Some((run_start, stop))
            }
            Some((run_start, run_end)) => {
                spans.push((run_start, run_end));
                Some((start, stop))
            }
            None => Some((start, stop)),
        };
    }
    spans.extend(run);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(text: &str, max: usize) -> Vec<&str> {
        split(text, max)
            .into_iter()
            .map(|(start, end)| &text[start..end])
            .collect()
    }

    #[test]
    fn paragraphs_are_passages_and_headings_stay_with_their_paragraph() {
        let text = "# Title\n\nFirst paragraph.\nStill first.\n\n## Part\n\nSecond one.\n";
        assert_eq!(
            texts(text, 1000),
            [
                "# Title\n\nFirst paragraph.\nStill first.",
                "## Part\n\nSecond one."
            ]
        );
    }

    #[test]
    fn a_long_paragraph_is_cut_between_sentences() {
        let text = "One two three. Four five six. Seven eight nine.\n\nShort.";
        assert_eq!(
            texts(text, 30),
            [
                "One two three. Four five six.",
                "Seven eight nine.",
                "Short."
            ]
        );
    }

    #[test]
    fn a_sentence_longer_than_the_limit_is_kept_whole() {
        let text = "An unusually long single sentence without any break.";
        assert_eq!(texts(text, 10), [text]);
    }

    #[test]
    fn a_heading_longer_than_the_room_left_starts_its_own_run() {
        let text = "## Heading\n\nAlpha beta gamma. Delta epsilon.";
        assert_eq!(
            texts(text, 20),
            ["## Heading", "Alpha beta gamma.", "Delta epsilon."]
        );
    }

    #[test]
    fn offsets_are_code_points_and_slice_the_original() {
        let text = "Jürgen wrote.\n\n日本語の文。\n\nLast é.";
        let passages = passages(text, 1000);
        let chars: Vec<char> = text.chars().collect();
        let pieces: Vec<String> = passages
            .iter()
            .map(|p| chars[p.start..p.end].iter().collect())
            .collect();
        assert_eq!(pieces, ["Jürgen wrote.", "日本語の文。", "Last é."]);
        for passage in &passages {
            assert_eq!(
                passage.text(text),
                chars[passage.start..passage.end].iter().collect::<String>()
            );
        }
    }

    #[test]
    fn blank_and_whitespace_only_texts_have_no_passages() {
        assert!(split("", 100).is_empty());
        assert!(split(" \n\n \t\n", 100).is_empty());
    }

    #[test]
    fn a_trailing_heading_is_kept() {
        let text = "Body.\n\n## End";
        assert_eq!(texts(text, 100), ["Body.", "## End"]);
    }
}
