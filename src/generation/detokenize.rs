//! Incremental detokenization: the text each new token adds, found by
//! decoding only the last few tokens, never the whole sequence again.
//!
//! As in TGI's `decode_token`: decode the tokens since the last emitted
//! piece twice, once without the new tokens (`prefix`) and once with them;
//! the difference is the new text. Starting a little before the new tokens
//! keeps tokenizers whose output depends on the previous token (leading
//! spaces of SentencePiece, byte-level BPE characters split over tokens)
//! right. Text ending in U+FFFD is half a UTF-8 character: it waits for the
//! next token.

/// Decoding of a partial UTF-8 sequence.
const REPLACEMENT: char = '\u{FFFD}';

#[derive(Debug, Default, Clone)]
pub struct IncrementalDecoder {
    /// First token of the window decoded as context.
    prefix_offset: usize,
    /// First token whose text has not been emitted.
    read_offset: usize,
}

impl IncrementalDecoder {
    pub fn new() -> IncrementalDecoder {
        IncrementalDecoder::default()
    }

    /// The new text after `ids` grew (the generated tokens so far).
    pub fn next(&mut self, ids: &[i64], decode: impl Fn(&[i64]) -> String) -> String {
        self.emit(ids, decode, false)
    }

    /// Everything not emitted yet, even half a character: the sequence ended.
    pub fn flush(&mut self, ids: &[i64], decode: impl Fn(&[i64]) -> String) -> String {
        self.emit(ids, decode, true)
    }

    fn emit(&mut self, ids: &[i64], decode: impl Fn(&[i64]) -> String, last: bool) -> String {
        if self.read_offset >= ids.len() {
            return String::new();
        }
        let prefix = decode(&ids[self.prefix_offset..self.read_offset]);
        let text = decode(&ids[self.prefix_offset..]);
        if !last && text.ends_with(REPLACEMENT) {
            return String::new();
        }
        // The prefix was emitted whole, so it is normally a prefix of the
        // longer decoding; if a tokenizer disagrees, emit nothing rather
        // than cut a character.
        let new_text = match text.strip_prefix(prefix.as_str()) {
            Some(new_text) => new_text.to_string(),
            None if last => text.get(prefix.len()..).unwrap_or_default().to_string(),
            None => return String::new(),
        };
        if new_text.is_empty() && !last {
            return String::new();
        }
        self.prefix_offset = self.read_offset;
        self.read_offset = ids.len();
        new_text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A byte-level "tokenizer": each id is one byte, decoded lossily, like
    /// GPT-2's byte-level BPE split inside a character.
    fn decode(ids: &[i64]) -> String {
        let bytes: Vec<u8> = ids.iter().map(|&id| id as u8).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    fn ids(text: &str) -> Vec<i64> {
        text.bytes().map(i64::from).collect()
    }

    #[test]
    fn pieces_add_up_to_the_whole_text() {
        let text = "Grüße, café… ok";
        let all = ids(text);
        let mut decoder = IncrementalDecoder::new();
        let mut pieces = Vec::new();
        for end in 1..=all.len() {
            pieces.push(decoder.next(&all[..end], decode));
        }
        pieces.push(decoder.flush(&all, decode));
        assert_eq!(pieces.concat(), text);
        // Half characters are held back, never emitted as U+FFFD.
        assert!(pieces.iter().all(|piece| !piece.contains(REPLACEMENT)));
        // "G" then "r" arrive one token each.
        assert_eq!(pieces[..2], ["G", "r"]);
    }

    #[test]
    fn only_the_window_since_the_last_piece_is_decoded() {
        let all = ids("abcdefgh");
        let mut decoder = IncrementalDecoder::new();
        let longest = std::cell::Cell::new(0);
        let counting = |ids: &[i64]| {
            longest.set(longest.get().max(ids.len()));
            decode(ids)
        };
        for end in 1..=all.len() {
            decoder.next(&all[..end], counting);
        }
        assert!(
            longest.get() <= 2,
            "decoded {} tokens at once",
            longest.get()
        );
    }

    #[test]
    fn flush_releases_a_dangling_half_character() {
        let all = vec![0xC3_i64];
        let mut decoder = IncrementalDecoder::new();
        assert_eq!(decoder.next(&all, decode), "");
        assert_eq!(decoder.flush(&all, decode), REPLACEMENT.to_string());
        assert_eq!(decoder.flush(&all, decode), "");
    }
}
