//! Sentence boundaries in English text: splitting a text for translation and
//! trimming generated text back to its last complete sentence.

/// Characters that end a sentence.
const TERMINATORS: [char; 4] = ['.', '!', '?', '…'];
/// Characters that may follow a terminator and still belong to the sentence.
const CLOSERS: [char; 8] = ['"', '\'', ')', ']', '}', '”', '’', '»'];
/// Words whose trailing period does not end a sentence.
const ABBREVIATIONS: [&str; 22] = [
    "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "vs", "etc", "e.g", "i.e", "cf", "fig",
    "no", "vol", "inc", "ltd", "co", "approx", "dept", "u.s",
];

/// A sentence of a text and the whitespace that followed it in the original.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment<'a> {
    pub sentence: &'a str,
    pub separator: &'a str,
}

/// Splits `text` into sentences, keeping the whitespace between them so that
/// translated sentences can be joined back with the same layout (line breaks
/// and paragraphs survive). Leading whitespace is returned as the separator of
/// an empty first segment only if the text starts with whitespace.
pub fn split_sentences(text: &str) -> Vec<Segment<'_>> {
    let mut segments = Vec::new();
    let trimmed_start = text.len() - text.trim_start().len();
    if trimmed_start > 0 {
        segments.push(Segment {
            sentence: "",
            separator: &text[..trimmed_start],
        });
    }
    let mut start = trimmed_start;
    for end in sentence_ends(text) {
        if end <= start {
            continue;
        }
        let rest = &text[end..];
        let gap = rest.len() - rest.trim_start().len();
        segments.push(Segment {
            sentence: &text[start..end],
            separator: &text[end..end + gap],
        });
        start = end + gap;
    }
    if start < text.len() {
        let tail = &text[start..];
        let body = tail.trim_end();
        segments.push(Segment {
            sentence: body,
            separator: &tail[body.len()..],
        });
    }
    segments
}

/// Cuts `text` after its last complete sentence. Returns `None` when the text
/// holds no sentence end at all (the caller decides what to keep then).
pub fn trim_to_sentence_end(text: &str) -> Option<&str> {
    let trimmed = text.trim_end();
    if ends_sentence(trimmed) {
        return Some(trimmed);
    }
    sentence_ends(text).last().map(|&end| &text[..end])
}

fn ends_sentence(text: &str) -> bool {
    let body = text.trim_end_matches(CLOSERS);
    body.ends_with(TERMINATORS) && !ends_with_abbreviation(body)
}

/// The byte offset just past the last sentence end that is followed by
/// whitespace: text up to there stays a complete sentence however the text
/// goes on.
pub fn last_settled_sentence_end(text: &str) -> Option<usize> {
    sentence_ends(text)
        .into_iter()
        .rev()
        .find(|&end| text[end..].starts_with(char::is_whitespace))
}

/// Byte offsets just past each sentence end followed by whitespace (line
/// breaks always end a sentence).
fn sentence_ends(text: &str) -> Vec<usize> {
    let mut ends = Vec::new();
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let mut index = 0;
    while index < chars.len() {
        let (offset, ch) = chars[index];
        if ch == '\n' {
            let body_end = text[..offset].trim_end().len();
            if body_end > 0 {
                ends.push(body_end);
            }
            index += 1;
            continue;
        }
        if TERMINATORS.contains(&ch) {
            let mut next = index + 1;
            while next < chars.len()
                && (TERMINATORS.contains(&chars[next].1) || CLOSERS.contains(&chars[next].1))
            {
                next += 1;
            }
            let end = chars.get(next).map_or(text.len(), |(o, _)| *o);
            let followed_by_space = chars.get(next).is_some_and(|(_, c)| c.is_whitespace());
            let at_text_end = next == chars.len();
            if (followed_by_space || at_text_end)
                && !(ch == '.' && ends_with_abbreviation(&text[..offset + 1]))
            {
                ends.push(end);
            }
            index = next;
            continue;
        }
        index += 1;
    }
    ends.dedup();
    ends
}

/// True when the period at the end of `text` belongs to an abbreviation or an
/// initial ("Dr.", "e.g.", "J.").
fn ends_with_abbreviation(text: &str) -> bool {
    let Some(without_period) = text.strip_suffix('.') else {
        return false;
    };
    let word = without_period
        .rsplit(|c: char| c.is_whitespace() || c == '(' || c == '"')
        .next()
        .unwrap_or("");
    if word.chars().count() == 1 && word.chars().all(|c| c.is_uppercase()) {
        return true;
    }
    ABBREVIATIONS.contains(&word.to_lowercase().as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sentences(text: &str) -> Vec<&str> {
        split_sentences(text)
            .into_iter()
            .map(|s| s.sentence)
            .filter(|s| !s.is_empty())
            .collect()
    }

    #[test]
    fn splits_on_terminators_followed_by_space() {
        assert_eq!(
            sentences("The cat sat. Did it? Yes! It did."),
            ["The cat sat.", "Did it?", "Yes!", "It did."]
        );
    }

    #[test]
    fn keeps_decimals_abbreviations_and_initials_together() {
        assert_eq!(
            sentences("Version 3.5 is out. Dr. Smith and J. Doe agree, e.g. on this. Fine."),
            [
                "Version 3.5 is out.",
                "Dr. Smith and J. Doe agree, e.g. on this.",
                "Fine."
            ]
        );
    }

    #[test]
    fn closing_quotes_stay_with_their_sentence() {
        assert_eq!(
            sentences("He said \"stop.\" Then he left."),
            ["He said \"stop.\"", "Then he left."]
        );
    }

    #[test]
    fn text_without_terminator_is_one_sentence() {
        assert_eq!(sentences("no end here"), ["no end here"]);
        assert!(sentences("").is_empty());
        assert!(sentences("   ").is_empty());
    }

    #[test]
    fn separators_preserve_layout() {
        let text = "  First one.\n\nSecond one. Third\n";
        let rebuilt: String = split_sentences(text)
            .iter()
            .map(|s| format!("{}{}", s.sentence, s.separator))
            .collect();
        assert_eq!(rebuilt, text);
        assert_eq!(sentences(text), ["First one.", "Second one.", "Third"]);
    }

    #[test]
    fn trims_to_last_complete_sentence() {
        assert_eq!(trim_to_sentence_end("One. Two is cut"), Some("One."));
        assert_eq!(trim_to_sentence_end("One! Two? Thr"), Some("One! Two?"));
        assert_eq!(trim_to_sentence_end("Done. "), Some("Done."));
        assert_eq!(trim_to_sentence_end("It costs 3.5 dol"), None);
        assert_eq!(trim_to_sentence_end("no sentence end"), None);
        assert_eq!(trim_to_sentence_end("Ask Dr. Who"), None);
        assert_eq!(trim_to_sentence_end("A line\nand more"), Some("A line"));
    }

    #[test]
    fn handles_multibyte_text() {
        assert_eq!(
            sentences("Grüße aus Köln… Schön!"),
            ["Grüße aus Köln…", "Schön!"]
        );
        assert_eq!(trim_to_sentence_end("Ça va? Très bi"), Some("Ça va?"));
    }
}
