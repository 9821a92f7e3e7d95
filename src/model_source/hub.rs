//! Downloads model files from a Hugging Face-style hub
//! (`{endpoint}/{repo}/resolve/{revision}/{file}`) into a local cache.
//!
//! A file in the cache is used without asking the network, so a model that
//! was downloaded once starts again offline. Files the hub does not have are
//! remembered with a `.missing` marker for the same reason. Pin `revision`
//! to a commit for reproducible deployments; delete the cache to refresh.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::blocking::Client;
use reqwest::StatusCode;

use super::FileWanted;
use crate::configuration::HubSettings;
use crate::engine::LoadError;

pub struct HubClient {
    endpoint: String,
    cache_dir: PathBuf,
    client: Client,
}

enum Download {
    Saved(PathBuf),
    NotOnHub,
}

impl HubClient {
    pub fn new(settings: &HubSettings) -> Result<HubClient, LoadError> {
        let client = Client::builder()
            .connect_timeout(Duration::from_secs(settings.connect_timeout_secs))
            .user_agent(concat!("nlp-serve/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|error| LoadError::Io(format!("cannot build an HTTP client: {error}")))?;
        Ok(HubClient {
            endpoint: settings.endpoint.trim_end_matches('/').to_string(),
            cache_dir: settings.cache_dir.clone(),
            client,
        })
    }

    /// The cache directory of one repository revision.
    pub fn snapshot_dir(&self, repo: &str, revision: &str) -> PathBuf {
        self.cache_dir
            .join(repo.replace('/', "--"))
            .join(revision.replace('/', "--"))
    }

    pub fn fetch(
        &self,
        repo: &str,
        revision: &str,
        wanted: &[FileWanted],
    ) -> Result<HashMap<&'static str, PathBuf>, LoadError> {
        let dir = self.snapshot_dir(repo, revision);
        fs::create_dir_all(&dir).map_err(|error| {
            LoadError::Io(format!(
                "cannot create cache directory {}: {error}",
                dir.display()
            ))
        })?;
        let mut paths = HashMap::new();
        for file in wanted {
            if let Some(path) = self.fetch_first(repo, revision, &dir, file.names)? {
                paths.insert(file.names[0], path);
            } else if file.required {
                return Err(LoadError::HubFile {
                    repo: repo.to_string(),
                    revision: revision.to_string(),
                    file: file.names.join(" or "),
                    detail: "not found".to_string(),
                });
            }
        }
        Ok(paths)
    }

    /// The first of `names` that is cached or on the hub.
    fn fetch_first(
        &self,
        repo: &str,
        revision: &str,
        dir: &Path,
        names: &[&str],
    ) -> Result<Option<PathBuf>, LoadError> {
        // Anything already cached wins, so no network is needed for it.
        for name in names {
            let path = dir.join(name);
            if path.is_file() {
                return Ok(Some(path));
            }
        }
        for name in names {
            if missing_marker(dir, name).exists() {
                continue;
            }
            match self.download(repo, revision, dir, name)? {
                Download::Saved(path) => return Ok(Some(path)),
                Download::NotOnHub => {
                    let _ = fs::write(missing_marker(dir, name), b"");
                }
            }
        }
        Ok(None)
    }

    fn download(
        &self,
        repo: &str,
        revision: &str,
        dir: &Path,
        name: &str,
    ) -> Result<Download, LoadError> {
        let url = format!("{}/{repo}/resolve/{revision}/{name}", self.endpoint);
        let file_error = |detail: String| LoadError::HubFile {
            repo: repo.to_string(),
            revision: revision.to_string(),
            file: name.to_string(),
            detail,
        };
        tracing::info!(%url, "downloading");
        let mut response = self.client.get(&url).send().map_err(|error| {
            if error.is_connect() || error.is_timeout() {
                LoadError::HubUnreachable {
                    endpoint: self.endpoint.clone(),
                    repo: repo.to_string(),
                    detail: innermost_cause(&error),
                }
            } else {
                file_error(innermost_cause(&error))
            }
        })?;
        match response.status() {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => return Ok(Download::NotOnHub),
            status => return Err(file_error(format!("HTTP {status} from {url}"))),
        }
        let target = dir.join(name);
        let partial = dir.join(format!(".{name}.partial"));
        let mut write = || -> io::Result<u64> {
            let mut out = fs::File::create(&partial)?;
            let bytes = response.copy_to(&mut out).map_err(io::Error::other)?;
            out.sync_all()?;
            fs::rename(&partial, &target)?;
            Ok(bytes)
        };
        match write() {
            Ok(bytes) => {
                tracing::info!(%url, bytes, "downloaded");
                Ok(Download::Saved(target))
            }
            Err(error) => {
                let _ = fs::remove_file(&partial);
                Err(file_error(format!("download interrupted: {error}")))
            }
        }
    }
}

fn missing_marker(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!(".{name}.missing"))
}

/// reqwest's top-level message is generic; the root cause says what failed.
fn innermost_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}
