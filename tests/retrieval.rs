//! Retrieval quality on the reference document: questions written for the
//! project (paraphrased, not copied from its sentences), each with the
//! phrase that answers it. The passage holding that phrase must be among the
//! passages read (`[documents] passages`, default settings) for at least 90%
//! of them. Prints recall@1..5 (`cargo test --test retrieval -- --nocapture`).

use nlp_serve::configuration::Settings;
use nlp_serve::documents::{DocumentStore, Scope};

const QUESTIONS: [(&str, &str); 31] = [
    (
        "Who popularised the term machine learning?",
        "Arthur Samuel",
    ),
    (
        "Which device learned to tell apart two kinds of pictures by tuning weights?",
        "Frank Rosenblatt built the perceptron",
    ),
    (
        "Who demonstrated that one perceptron is unable to compute exclusive or?",
        "Marvin Minsky and Seymour Papert",
    ),
    (
        "Which algorithm revived neural networks in the eighties?",
        "backpropagation algorithm",
    ),
    ("Who first described random forests?", "Leo Breiman"),
    (
        "Which network's victory at an image contest in 2012 started the current era?",
        "AlexNet",
    ),
    (
        "What was the title of the paper that introduced transformers?",
        "Attention Is All You Need",
    ),
    (
        "What are the three ingredients of a learning problem?",
        "a task, a measure of performance, and experience",
    ),
    (
        "What is another name for the model class?",
        "hypothesis space",
    ),
    (
        "What do we call doing well on data the model has not seen?",
        "generalisation",
    ),
    (
        "How does logistic regression turn a weighted sum into a probability?",
        "sigmoid function",
    ),
    (
        "Which libraries made gradient boosting popular for tabular data?",
        "XGBoost and LightGBM",
    ),
    (
        "Why is training a support vector machine sure to find the best solution?",
        "remains convex",
    ),
    (
        "When does nearest-neighbour classification become slow and unreliable?",
        "many dimensions",
    ),
    (
        "How does k-means update its centres?",
        "moves each centre to the mean of its points",
    ),
    (
        "Which technique projects data onto the directions with the largest variance?",
        "Principal component analysis",
    ),
    (
        "How can a bank spot an unusual card payment?",
        "anomaly detection",
    ),
    (
        "What must an agent trade off against exploitation?",
        "exploration",
    ),
    ("Who did AlphaGo beat?", "Lee Sedol"),
    (
        "Who designed the long short-term memory network?",
        "Sepp Hochreiter and Jürgen Schmidhuber",
    ),
    (
        "What is sampling from the smallest set of tokens whose probabilities reach p called?",
        "nucleus sampling",
    ),
    (
        "How much smaller is DistilBERT than BERT?",
        "forty percent fewer parameters",
    ),
    (
        "Where was the Marian framework mainly developed?",
        "University of Edinburgh and Microsoft",
    ),
    (
        "How many parameters did GPT-3 have?",
        "one hundred and seventy-five billion",
    ),
    (
        "What approach fine-tunes a model that was pretrained on a big general dataset?",
        "Transfer learning",
    ),
    (
        "What procedure splits scarce data into folds?",
        "cross-validation",
    ),
    (
        "Which score is used to evaluate translations?",
        "BLEU score",
    ),
    (
        "What is it called when a model fits noise instead of the pattern?",
        "Overfitting happens",
    ),
    (
        "What does dropout do during training?",
        "randomly switches off units",
    ),
    (
        "What is the slow loss of accuracy as the world changes called?",
        "data drift or concept drift",
    ),
    (
        "When did the European Union adopt its AI law?",
        "Artificial Intelligence Act in 2024",
    ),
];

#[test]
fn the_passage_that_answers_is_among_those_read_for_nine_questions_in_ten() {
    let settings = Settings::defaults().expect("default settings");
    let text = std::fs::read_to_string(&settings.qa.reference_document).expect("reference");
    let store = DocumentStore::in_memory(settings.documents.passage_chars).expect("store");
    store
        .ensure("reference", "reference", &text)
        .expect("stored");
    const DEPTH: usize = 5;
    let mut found_at = [0usize; DEPTH];
    let mut misses = Vec::new();
    for (question, phrase) in QUESTIONS {
        assert!(
            text.contains(phrase),
            "the phrase {phrase:?} is in the document"
        );
        let hits = store.search(question, Scope::All, DEPTH).expect("search");
        match hits.iter().position(|hit| hit.text.contains(phrase)) {
            Some(rank) => found_at[rank] += 1,
            None => misses.push(question),
        }
        if hits
            .iter()
            .take(settings.documents.passages)
            .all(|hit| !hit.text.contains(phrase))
        {
            println!("not read: {question:?} ({phrase:?})");
        }
    }
    let total = QUESTIONS.len() as f64;
    let mut cumulative = 0;
    let mut recall = Vec::new();
    for (k, count) in found_at.iter().enumerate() {
        cumulative += count;
        recall.push(cumulative as f64 / total);
        println!(
            "recall@{}: {:.3} ({cumulative}/{})",
            k + 1,
            recall[k],
            QUESTIONS.len()
        );
    }
    println!("not in the top {DEPTH}: {misses:?}");
    let read = settings.documents.passages;
    assert!(
        recall[read.min(DEPTH) - 1] >= 0.9,
        "recall@{read} (the passages read) {:.3} < 0.9",
        recall[read.min(DEPTH) - 1]
    );
}
