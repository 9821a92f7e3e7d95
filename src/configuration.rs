//! Typed settings: the compiled-in `config/default.toml`, then a profile file,
//! then `--config FILE`, then `NLP_SERVE__SECTION__KEY` environment variables,
//! then `PORT`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::de::IgnoredAny;
use serde::Deserialize;

use crate::generation::linear::Precision;
use crate::generation::seq2seq::EarlyStopping;
use crate::qa::precision::QaPrecision;

/// The defaults, documented in place.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

/// Every setting of the service.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub logging: LoggingSettings,
    pub hub: HubSettings,
    pub runtime: RuntimeSettings,
    pub completion: CompletionSettings,
    pub qa: QaSettings,
    pub translation: TranslationSettings,
    pub documents: DocumentSettings,
    pub auth: AuthSettings,
    pub rate_limit: RateLimitSettings,
    pub cors: CorsSettings,
}

/// The document store that `/qa` retrieves passages from.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DocumentSettings {
    /// The SQLite database file (created with its directory on first start).
    pub database: PathBuf,
    /// Longest passage in characters (paragraphs longer are cut between sentences).
    pub passage_chars: usize,
    /// Passages read per question when the request does not say.
    pub passages: usize,
    /// Most passages a request may ask to be read.
    pub max_passages: usize,
    /// Largest document accepted, in bytes of UTF-8.
    pub max_document_bytes: usize,
    /// Most documents stored (the reference document included).
    pub max_documents: usize,
    /// Longest title in characters.
    pub max_title_chars: usize,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    pub api_keys: Vec<String>,
    pub protect_operations: bool,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSettings {
    pub requests_per_second: u32,
    pub burst: u32,
    /// Proxies (addresses or CIDR networks) whose X-Forwarded-For is believed.
    pub trusted_proxies: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CorsSettings {
    pub allowed_origins: Vec<String>,
    pub max_age_secs: usize,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    pub host: String,
    pub port: u16,
    pub workers: usize,
    pub shutdown_timeout_secs: u64,
    pub max_body_bytes: usize,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LoggingSettings {
    pub format: LogFormat,
    pub level: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HubSettings {
    /// The hub's address; unset: HF_ENDPOINT, else https://huggingface.co.
    pub endpoint: Option<String>,
    /// The hub cache; unset: HF_HUB_CACHE, else $HF_HOME/hub, else
    /// ~/.cache/huggingface/hub (`model_source::hub_config`).
    pub cache_dir: Option<PathBuf>,
    /// Serve from the cache only (HF_HUB_OFFLINE=1 also does).
    pub offline: bool,
    pub connect_timeout_secs: u64,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DeviceSetting {
    Cpu,
    Cuda,
    Auto,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RuntimeSettings {
    pub torch_threads: i32,
    pub retain_freed_memory: bool,
    pub fault_injection: bool,
    pub device: DeviceSetting,
    pub tokenizer_threads: usize,
    pub tokenizer_queue_size: usize,
}

/// Where a model comes from and how its queue is shaped; common to all tasks.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct ModelSettings {
    pub enabled: bool,
    pub source: String,
    pub revision: String,
    pub queue_size: usize,
    pub max_batch_size: usize,
    pub max_batch_wait_ms: u64,
}

// Unknown keys: see `unknown` (serde's deny_unknown_fields ignores flatten).
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct CompletionSettings {
    #[serde(flatten)]
    pub model: ModelSettings,
    pub precision: Precision,
    pub max_batch_tokens: usize,
    pub max_prompt_tokens: usize,
    pub default_max_new_tokens: usize,
    pub max_new_tokens: usize,
    pub max_return_sequences: usize,
    /// Keys this section does not know (a misspelt setting), refused at load:
    /// `flatten` defeats `deny_unknown_fields`, so they are gathered here.
    #[serde(flatten)]
    pub unknown: BTreeMap<String, IgnoredAny>,
}

// Unknown keys: see `unknown` (serde's deny_unknown_fields ignores flatten).
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct QaSettings {
    #[serde(flatten)]
    pub model: ModelSettings,
    pub precision: QaPrecision,
    pub lower_case: bool,
    pub max_seq_length: usize,
    pub doc_stride: usize,
    pub max_question_tokens: usize,
    pub max_answer_tokens: usize,
    pub window_batch_size: usize,
    pub reference_document: PathBuf,
    pub max_question_chars: usize,
    pub max_context_chars: usize,
    /// A request context up to this many characters is read whole; a longer
    /// one is cut into passages and only the best are read.
    pub read_whole_context_chars: usize,
    /// Keys this section does not know (a misspelt setting), refused at load:
    /// `flatten` defeats `deny_unknown_fields`, so they are gathered here.
    #[serde(flatten)]
    pub unknown: BTreeMap<String, IgnoredAny>,
}

// Unknown keys: see `unknown` (serde's deny_unknown_fields ignores flatten).
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct TranslationSettings {
    #[serde(flatten)]
    pub model: ModelSettings,
    pub precision: Precision,
    pub num_beams: i64,
    /// None: the model's own generation configuration decides.
    pub length_penalty: Option<f64>,
    pub early_stopping: Option<EarlyStopping>,
    pub min_output_tokens: i64,
    pub max_output_tokens: i64,
    pub sentence_batch_size: usize,
    pub max_texts: usize,
    pub max_text_chars: usize,
    /// Keys this section does not know (a misspelt setting), refused at load:
    /// `flatten` defeats `deny_unknown_fields`, so they are gathered here.
    #[serde(flatten)]
    pub unknown: BTreeMap<String, IgnoredAny>,
}

/// Where to read settings from, besides the defaults.
#[derive(Debug, Default, Clone)]
pub struct SettingsSources {
    /// A profile name: `config/<name>.toml` (relative to `config_dir`).
    pub profile: Option<String>,
    /// Directory holding profile files; `config` when unset.
    pub config_dir: Option<PathBuf>,
    /// An extra TOML file given with `--config`.
    pub file: Option<PathBuf>,
    /// Apply `NLP_SERVE__*` and `PORT` from the process environment.
    pub use_environment: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("profile '{name}' not found: {path} does not exist")]
    UnknownProfile { name: String, path: PathBuf },
    #[error("configuration file {0} does not exist")]
    MissingFile(PathBuf),
    #[error("invalid configuration: {0}")]
    Invalid(#[from] config::ConfigError),
    #[error("invalid configuration: {0}")]
    Inconsistent(String),
}

impl Settings {
    /// Reads the layered settings.
    pub fn load(sources: &SettingsSources) -> Result<Settings, SettingsError> {
        let mut builder = config::Config::builder().add_source(config::File::from_str(
            DEFAULT_TOML,
            config::FileFormat::Toml,
        ));
        if let Some(name) = &sources.profile {
            let dir = sources
                .config_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from("config"));
            let path = dir.join(format!("{name}.toml"));
            if !path.is_file() {
                return Err(SettingsError::UnknownProfile {
                    name: name.clone(),
                    path,
                });
            }
            builder = builder.add_source(config::File::from(path));
        }
        if let Some(path) = &sources.file {
            if !path.is_file() {
                return Err(SettingsError::MissingFile(path.clone()));
            }
            builder = builder.add_source(config::File::from(path.as_path()));
        }
        if sources.use_environment {
            builder = builder.add_source(
                config::Environment::with_prefix("NLP_SERVE")
                    .prefix_separator("__")
                    .separator("__")
                    .try_parsing(true)
                    .list_separator(",")
                    .with_list_parse_key("auth.api_keys")
                    .with_list_parse_key("cors.allowed_origins")
                    .with_list_parse_key("rate_limit.trusted_proxies"),
            );
            if let Ok(port) = std::env::var("PORT") {
                builder = builder.set_override("server.port", port)?;
            }
        }
        let settings: Settings = builder.build()?.try_deserialize()?;
        settings.check()?;
        Ok(settings)
    }

    /// The defaults alone.
    pub fn defaults() -> Result<Settings, SettingsError> {
        Settings::load(&SettingsSources::default())
    }

    fn check(&self) -> Result<(), SettingsError> {
        let bad = |what: &str| Err(SettingsError::Inconsistent(what.to_string()));
        for (task, unknown) in [
            ("completion", &self.completion.unknown),
            ("qa", &self.qa.unknown),
            ("translation", &self.translation.unknown),
        ] {
            if let Some(key) = unknown.keys().next() {
                return bad(&format!(
                    "unknown key `{key}` in [{task}] (NLP_SERVE__{}__{}); see config/default.toml for the settings",
                    task.to_uppercase(),
                    key.to_uppercase()
                ));
            }
        }
        for (task, model) in self.models() {
            if model.queue_size == 0 || model.max_batch_size == 0 {
                return bad(&format!(
                    "{task}: queue_size and max_batch_size must be at least 1"
                ));
            }
        }
        if self.completion.default_max_new_tokens > self.completion.max_new_tokens {
            return bad("completion.default_max_new_tokens exceeds completion.max_new_tokens");
        }
        if self.translation.min_output_tokens > self.translation.max_output_tokens {
            return bad("translation.min_output_tokens exceeds translation.max_output_tokens");
        }
        // A window holds [CLS] question [SEP] context [SEP]; consecutive
        // windows must move forward past the stride even for the longest question.
        if self.qa.doc_stride + self.qa.max_question_tokens + 3 >= self.qa.max_seq_length {
            return bad(
                "qa.doc_stride + qa.max_question_tokens + 3 must be smaller than qa.max_seq_length",
            );
        }
        if let Err(error) = crate::access::parse_networks(&self.rate_limit.trusted_proxies) {
            return bad(&format!("rate_limit.trusted_proxies: {error}"));
        }
        let documents = &self.documents;
        if documents.passages == 0 || documents.passages > documents.max_passages {
            return bad("documents.passages must be between 1 and documents.max_passages");
        }
        if documents.passage_chars == 0 || documents.max_documents == 0 {
            return bad("documents.passage_chars and documents.max_documents must be at least 1");
        }
        if self.qa.max_answer_tokens == 0 {
            return bad("qa.max_answer_tokens must be at least 1");
        }
        Ok(())
    }

    /// The model settings of each task, by task name.
    pub fn models(&self) -> [(&'static str, &ModelSettings); 3] {
        [
            ("completion", &self.completion.model),
            ("qa", &self.qa.model),
            ("translation", &self.translation.model),
        ]
    }
}

impl ModelSettings {
    /// A source that names an existing directory, or looks like a path, is local.
    pub fn local_dir(&self) -> Option<&Path> {
        let path = Path::new(&self.source);
        let looks_like_path = self.source.starts_with('.')
            || self.source.starts_with('/')
            || self.source.starts_with('~');
        (looks_like_path || path.is_dir()).then_some(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_misspelt_task_setting_is_refused() {
        let dir = std::env::temp_dir().join(format!("nlp-serve-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        for (section, key) in [
            ("completion", "precison"),
            ("qa", "top_kk"),
            ("translation", "beams"),
        ] {
            let file = dir.join(format!("{section}.toml"));
            std::fs::write(&file, format!("[{section}]\n{key} = 1\n")).expect("write");
            let error = Settings::load(&SettingsSources {
                file: Some(file),
                ..SettingsSources::default()
            })
            .expect_err("unknown key refused");
            let message = error.to_string();
            assert!(
                message.contains(&format!("unknown key `{key}` in [{section}]")),
                "{message}"
            );
        }
        // Every key of the defaults is known.
        assert!(Settings::defaults().is_ok());
    }

    #[test]
    fn defaults_parse_and_name_the_real_models() {
        let settings = Settings::defaults().expect("defaults parse");
        assert_eq!(settings.completion.model.source, "distilgpt2");
        assert_eq!(settings.server.port, 8080);
        assert!(settings.completion.model.local_dir().is_none());
    }

    #[test]
    fn tiny_profile_points_at_local_directories() {
        let settings = Settings::load(&SettingsSources {
            profile: Some("tiny".into()),
            config_dir: Some(PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/config"
            ))),
            ..Default::default()
        })
        .expect("tiny profile parses");
        assert_eq!(settings.qa.model.source, "models/tiny/distilbert-qa");
        assert_eq!(settings.translation.num_beams, 1);
    }

    #[test]
    fn a_config_file_overrides_the_profile() {
        let path =
            std::env::temp_dir().join(format!("nlp-serve-config-{}.toml", std::process::id()));
        std::fs::write(
            &path,
            "[completion]\nmax_new_tokens = 99\n[qa]\nenabled = false\n",
        )
        .expect("write config");
        let settings = Settings::load(&SettingsSources {
            profile: Some("tiny".into()),
            config_dir: Some(PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/config"
            ))),
            file: Some(path.clone()),
            use_environment: false,
        })
        .expect("layers parse");
        let _ = std::fs::remove_file(path);
        assert_eq!(settings.completion.max_new_tokens, 99);
        assert!(!settings.qa.model.enabled);
        assert_eq!(settings.completion.model.source, "models/tiny/gpt2");
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let path = std::env::temp_dir().join(format!("nlp-serve-typo-{}.toml", std::process::id()));
        std::fs::write(&path, "[server]\nprot = 1\n").expect("write config");
        let error = Settings::load(&SettingsSources {
            file: Some(path.clone()),
            ..Default::default()
        })
        .unwrap_err();
        let _ = std::fs::remove_file(path);
        assert!(error.to_string().contains("prot"), "{error}");
    }

    #[test]
    fn unknown_profile_is_an_error() {
        let error = Settings::load(&SettingsSources {
            profile: Some("nope".into()),
            ..Default::default()
        })
        .unwrap_err();
        assert!(error.to_string().contains("profile 'nope' not found"));
    }
}
