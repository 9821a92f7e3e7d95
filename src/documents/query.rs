//! A question turned into an FTS5 query: its content words, each quoted (so
//! no user text is read as FTS5 syntax) and joined with OR, so that BM25
//! ranks passages by how many of the rarer words they share.

/// Words too common to say anything about where an answer is.
const STOP_WORDS: [&str; 64] = [
    "a", "about", "after", "all", "an", "and", "are", "as", "at", "be", "been", "by", "can", "did",
    "do", "does", "for", "from", "had", "has", "have", "how", "in", "into", "is", "it", "its",
    "many", "much", "of", "on", "one", "or", "that", "the", "their", "them", "there", "these",
    "they", "this", "to", "used", "was", "we", "were", "what", "when", "where", "which", "who",
    "whom", "whose", "why", "will", "with", "would", "you", "your", "called", "name", "named",
    "than", "then",
];

/// The FTS5 MATCH expression for `question`, or `None` when it holds no
/// content word.
pub fn match_expression(question: &str) -> Option<String> {
    let mut terms: Vec<String> = Vec::new();
    for word in question.split(|c: char| !c.is_alphanumeric()) {
        let word = word.to_lowercase();
        if word.is_empty() || STOP_WORDS.contains(&word.as_str()) || terms.contains(&word) {
            continue;
        }
        if word.chars().count() == 1 && !word.chars().all(|c| c.is_numeric()) {
            continue;
        }
        terms.push(word);
    }
    if terms.is_empty() {
        return None;
    }
    let quoted: Vec<String> = terms.iter().map(|term| format!("\"{term}\"")).collect();
    Some(quoted.join(" OR "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_words_are_quoted_and_joined_with_or() {
        assert_eq!(
            match_expression("Who introduced support vector machines?").as_deref(),
            Some("\"introduced\" OR \"support\" OR \"vector\" OR \"machines\"")
        );
    }

    #[test]
    fn fts_syntax_in_a_question_is_only_words() {
        assert_eq!(
            match_expression("NEAR(a b) AND \"x\" OR col:* ^start").as_deref(),
            Some("\"near\" OR \"col\" OR \"start\"")
        );
    }

    #[test]
    fn repeated_words_count_once_and_numbers_stay() {
        assert_eq!(
            match_expression("What happened in 1995 and in 1995?").as_deref(),
            Some("\"happened\" OR \"1995\"")
        );
    }

    #[test]
    fn a_question_of_stop_words_has_no_query() {
        assert_eq!(match_expression("Who is it?"), None);
        assert_eq!(match_expression("?!"), None);
    }

    #[test]
    fn non_latin_words_are_kept() {
        assert_eq!(
            match_expression("Was ist Jürgens 日本語?").as_deref(),
            Some("\"ist\" OR \"jürgens\" OR \"日本語\"")
        );
    }
}
