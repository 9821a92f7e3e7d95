//! Which hub, which cache, which token, and whether to go online: a `[hub]`
//! setting when it is set, else the environment variables Python's
//! huggingface_hub reads (HF_ENDPOINT, HF_HUB_CACHE, HF_HOME, HF_TOKEN,
//! HF_HUB_OFFLINE, ...), else its defaults, so a user's environment means
//! the same thing to both.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::configuration::HubSettings;

pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// A hub access token. Its `Debug` hides it, so it cannot reach a log.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    pub fn secret(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("Token(<hidden>)")
    }
}

/// Everything the hub client needs to know, resolved once.
#[derive(Debug, Clone, PartialEq)]
pub struct HubConfig {
    /// Without a trailing slash.
    pub endpoint: String,
    pub cache_dir: PathBuf,
    pub token: Option<Token>,
    pub offline: bool,
    pub timeout: Duration,
}

impl HubConfig {
    /// From the settings and this process's environment.
    pub fn from_settings(settings: &HubSettings) -> HubConfig {
        HubConfig::resolve(settings, |name| std::env::var(name).ok())
    }

    /// From the settings and `env` (a variable's value by name), as
    /// huggingface_hub's `constants.py` and `utils/_auth.py` resolve them.
    pub fn resolve(settings: &HubSettings, env: impl Fn(&str) -> Option<String>) -> HubConfig {
        // huggingface_hub uses an empty variable as it is; an empty path or
        // address is never what was meant, so here it counts as unset.
        let var = |name: &str| env(name).filter(|value| !value.trim().is_empty());
        let home = var("HOME");
        let expand = |value: String| expand_user(&value, home.as_deref());
        let endpoint = settings
            .endpoint
            .clone()
            .or_else(|| var("HF_ENDPOINT"))
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string())
            .trim_end_matches('/')
            .to_string();
        let hf_home = var("HF_HOME").map(expand).unwrap_or_else(|| {
            var("XDG_CACHE_HOME")
                .map(expand)
                .unwrap_or_else(|| expand("~/.cache".to_string()))
                .join("huggingface")
        });
        let cache_dir = settings.cache_dir.clone().unwrap_or_else(|| {
            var("HF_HUB_CACHE")
                .or_else(|| var("HUGGINGFACE_HUB_CACHE"))
                .map(expand)
                .unwrap_or_else(|| hf_home.join("hub"))
        });
        let token = var("HF_TOKEN")
            .or_else(|| var("HUGGING_FACE_HUB_TOKEN"))
            .or_else(|| {
                let file = var("HF_TOKEN_PATH")
                    .map(expand)
                    .unwrap_or_else(|| hf_home.join("token"));
                std::fs::read_to_string(file).ok()
            })
            .map(|token| token.trim().to_string())
            .filter(|token| !token.is_empty())
            .map(Token);
        let offline = settings.offline
            || var("HF_HUB_OFFLINE")
                .or_else(|| var("TRANSFORMERS_OFFLINE"))
                .is_some_and(|value| is_true(&value));
        HubConfig {
            endpoint,
            cache_dir,
            token,
            offline,
            timeout: Duration::from_secs(settings.connect_timeout_secs),
        }
    }
}

/// huggingface_hub's `ENV_VARS_TRUE_VALUES`.
fn is_true(value: &str) -> bool {
    matches!(
        value.trim().to_ascii_uppercase().as_str(),
        "1" | "ON" | "YES" | "TRUE"
    )
}

/// `~` and `~/...` as Python's `os.path.expanduser` reads them.
fn expand_user(value: &str, home: Option<&str>) -> PathBuf {
    match (value.strip_prefix('~'), home) {
        (Some(""), Some(home)) => PathBuf::from(home),
        (Some(rest), Some(home)) if rest.starts_with('/') => {
            Path::new(home).join(rest.trim_start_matches('/'))
        }
        _ => PathBuf::from(value),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn settings() -> HubSettings {
        HubSettings {
            endpoint: None,
            cache_dir: None,
            offline: false,
            connect_timeout_secs: 10,
        }
    }

    fn resolve(settings: &HubSettings, env: &[(&str, &str)]) -> HubConfig {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect();
        HubConfig::resolve(settings, |name| env.get(name).cloned())
    }

    #[test]
    fn defaults_are_huggingface_hubs() {
        let config = resolve(&settings(), &[("HOME", "/home/u")]);
        assert_eq!(config.endpoint, "https://huggingface.co");
        assert_eq!(
            config.cache_dir,
            PathBuf::from("/home/u/.cache/huggingface/hub")
        );
        assert_eq!(config.token, None);
        assert!(!config.offline);
    }

    #[test]
    fn the_environment_is_read_as_huggingface_hub_reads_it() {
        let env = [
            ("HOME", "/home/u"),
            ("HF_HOME", "~/hf"),
            ("HF_ENDPOINT", "http://mirror.local/"),
            ("HF_TOKEN", " hf_abc\n"),
            ("HF_HUB_OFFLINE", "yes"),
        ];
        let config = resolve(&settings(), &env);
        assert_eq!(config.endpoint, "http://mirror.local");
        assert_eq!(config.cache_dir, PathBuf::from("/home/u/hf/hub"));
        assert_eq!(config.token.as_ref().map(Token::secret), Some("hf_abc"));
        assert!(config.offline);
        let env = [("HF_HOME", "/hf"), ("HF_HUB_CACHE", "/models")];
        assert_eq!(
            resolve(&settings(), &env).cache_dir,
            PathBuf::from("/models")
        );
        let env = [("XDG_CACHE_HOME", "/xdg"), ("HF_HUB_OFFLINE", "0")];
        let config = resolve(&settings(), &env);
        assert_eq!(config.cache_dir, PathBuf::from("/xdg/huggingface/hub"));
        assert!(!config.offline);
    }

    #[test]
    fn settings_win_over_the_environment() {
        let mut settings = settings();
        settings.endpoint = Some("http://hub.example".into());
        settings.cache_dir = Some("/var/cache/nlp-serve".into());
        let env = [("HF_ENDPOINT", "http://other"), ("HF_HUB_CACHE", "/other")];
        let config = resolve(&settings, &env);
        assert_eq!(config.endpoint, "http://hub.example");
        assert_eq!(config.cache_dir, PathBuf::from("/var/cache/nlp-serve"));
    }

    #[test]
    fn the_token_file_is_read_when_no_variable_names_a_token() {
        let home = std::env::temp_dir().join(format!("nlp-serve-token-{}", std::process::id()));
        std::fs::create_dir_all(&home).expect("temp dir");
        std::fs::write(home.join("token"), "hf_from_file\n").expect("token file");
        let hf_home = home.to_string_lossy().to_string();
        let config = resolve(&settings(), &[("HF_HOME", &hf_home)]);
        assert_eq!(
            config.token.as_ref().map(Token::secret),
            Some("hf_from_file")
        );
        let config = resolve(
            &settings(),
            &[("HF_HOME", &hf_home), ("HF_TOKEN", "hf_env")],
        );
        assert_eq!(config.token.as_ref().map(Token::secret), Some("hf_env"));
        assert_eq!(format!("{:?}", config.token), "Some(Token(<hidden>))");
        let _ = std::fs::remove_dir_all(home);
    }
}
