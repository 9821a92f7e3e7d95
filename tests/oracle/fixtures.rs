//! Reading build/oracle: the checkpoint directories and fixtures.json that
//! scripts/oracle_fixtures.py wrote.

use std::path::PathBuf;
use std::sync::OnceLock;

use serde_json::Value;

/// build/oracle, where `make oracle-fixtures` writes.
pub fn oracle_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/build/oracle"))
}

/// fixtures.json, parsed once. Panics with the command to run when missing.
pub fn fixtures() -> &'static Value {
    static FIXTURES: OnceLock<Value> = OnceLock::new();
    FIXTURES.get_or_init(|| {
        let path = oracle_dir().join("fixtures.json");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|error| {
            panic!(
                "cannot read {}: {error}; run `make oracle-fixtures` (make test does)",
                path.display()
            )
        });
        serde_json::from_str(&text).expect("fixtures.json is JSON")
    })
}

/// One architecture's entry in fixtures.json, by its directory (`gpt2`,
/// `gpt_neo`, `gptj`, `marian`, `distilbert`).
pub fn model(name: &str) -> &'static Value {
    fixtures()["models"]
        .as_array()
        .and_then(|models| models.iter().find(|model| model["directory"] == name))
        .unwrap_or_else(|| panic!("fixtures.json has no model {name}"))
}

/// The checkpoint directory transformers saved for `name`.
pub fn checkpoint(name: &str) -> String {
    oracle_dir().join(name).display().to_string()
}
