//! Stop sequences: generated text ends before the first one that appears.

/// Truncates `text` before the earliest occurrence of any stop sequence.
/// Returns the kept text and whether a stop sequence was found.
pub fn truncate_at_stop<'a>(text: &'a str, stops: &[String]) -> (&'a str, bool) {
    let earliest = stops
        .iter()
        .filter(|stop| !stop.is_empty())
        .filter_map(|stop| text.find(stop.as_str()))
        .min();
    match earliest {
        Some(position) => (&text[..position], true),
        None => (text, false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stops(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn cuts_before_the_earliest_stop() {
        assert_eq!(
            truncate_at_stop("alpha, beta. gamma", &stops(&[".", ","])),
            ("alpha", true)
        );
    }

    #[test]
    fn no_stop_found_keeps_everything() {
        assert_eq!(truncate_at_stop("alpha", &stops(&["\n"])), ("alpha", false));
        assert_eq!(truncate_at_stop("alpha", &[]), ("alpha", false));
    }

    #[test]
    fn multi_character_and_unicode_stops() {
        assert_eq!(
            truncate_at_stop("Hi there\n\nNext: ünïcode", &stops(&["\n\n", "ü"])),
            ("Hi there", true)
        );
        assert_eq!(truncate_at_stop("ab", &stops(&[""])), ("ab", false));
        assert_eq!(truncate_at_stop("stop", &stops(&["stop"])), ("", true));
    }
}
