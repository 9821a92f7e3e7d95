use serde_json::json;

use crate::helpers::app;

fn translate(text: serde_json::Value) -> Vec<String> {
    let (status, body) = app().post("/translate", &json!({"text": text}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["model"], "models/tiny/marian-en-de");
    body["translations"]
        .as_array()
        .expect("list")
        .iter()
        .map(|t| t.as_str().expect("string").to_string())
        .collect()
}

#[test]
fn a_single_string_gives_one_translation() {
    let translations = translate(json!("The weather is nice today."));
    assert_eq!(translations.len(), 1);
    assert!(!translations[0].is_empty());
}

#[test]
fn a_list_keeps_count_and_order() {
    let texts = [
        "Machine learning needs data.",
        "Models are trained on examples.",
        "Inference is fast.",
    ];
    let together = translate(json!(texts));
    assert_eq!(together.len(), texts.len());
    let reversed: Vec<&str> = texts.iter().rev().copied().collect();
    let mut backwards = translate(json!(reversed));
    backwards.reverse();
    assert_eq!(together, backwards, "each translation stays with its text");
    for (text, translation) in texts.iter().zip(&together) {
        assert_eq!(
            &translate(json!(text))[0],
            translation,
            "alone vs. in a list: {text}"
        );
    }
}

#[test]
fn long_texts_are_split_into_sentences_and_joined_back() {
    let first = "Data is collected.";
    let second = "Models are trained.";
    let alone: Vec<String> = [first, second]
        .iter()
        .map(|s| translate(json!(s)).remove(0))
        .collect();
    let joined = translate(json!(format!("{first} {second}\n\n{first}")));
    assert_eq!(joined.len(), 1);
    assert_eq!(
        joined[0],
        format!("{} {}\n\n{}", alone[0], alone[1], alone[0])
    );
}

#[test]
fn empty_texts_translate_to_empty_strings() {
    assert_eq!(translate(json!(["", "   ", "Hello."]))[..2], ["", ""]);
}
