//! Downloads a hub repository's files into the hub cache, deciding per file
//! between the network and the cache as huggingface_hub's `hf_hub_download`
//! does: online, the hub says which commit the revision is at, and a file
//! the cache holds for that commit is not downloaded again; when the hub
//! cannot answer (no network, 5xx, 401) the commit the cache last saw for
//! the revision is served; offline (HF_HUB_OFFLINE) only the cache is read;
//! a revision that is a commit hash, once cached, needs no network at all.
//!
//! Why not the `hf-hub` crate: its blocking client (0.5) sends the token to
//! whatever host the hub redirects to (it re-adds its headers to the CDN
//! request), ignores HF_TOKEN, HF_HUB_CACHE and HF_HUB_OFFLINE, has no
//! fallback to the cache when the hub is unreachable, and panics on a
//! redirect without Location; 1.x pulls in reqwest 0.13 and the Xet client.
//! The cache layout is small and documented (`hub_cache`), so it is matched
//! here exactly, and tested against huggingface_hub itself (tests/cli.rs).

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

use super::hub_api::{without_query, ApiError, FileMeta, Head, HubApi};
use super::hub_cache::{is_commit_hash, RepoCache};
use super::hub_config::HubConfig;
use super::FileWanted;
use crate::configuration::HubSettings;
use crate::engine::LoadError;

pub struct HubClient {
    config: HubConfig,
    api: HubApi,
}

impl HubClient {
    /// A client for the hub the settings and the environment name.
    pub fn new(settings: &HubSettings) -> Result<HubClient, LoadError> {
        HubClient::with_config(HubConfig::from_settings(settings))
    }

    pub fn with_config(config: HubConfig) -> Result<HubClient, LoadError> {
        let api = HubApi::new(&config)
            .map_err(|error| LoadError::Io(format!("cannot build an HTTP client: {error}")))?;
        Ok(HubClient { config, api })
    }

    /// The wanted files of `repo` at `revision`, and every shard a sharded
    /// checkpoint's index names, all in one snapshot directory.
    pub fn fetch(
        &self,
        repo: &str,
        revision: &str,
        wanted: &[FileWanted],
    ) -> Result<HashMap<&'static str, PathBuf>, LoadError> {
        let mut fetch = RepoFetch {
            client: self,
            repo,
            revision,
            cache: RepoCache::new(&self.config.cache_dir, repo),
            hub_failure: None,
        };
        let mut paths = HashMap::new();
        for file in wanted {
            match fetch.first(file.names)? {
                Some(path) => {
                    paths.insert(file.names[0], path);
                }
                None if file.required => return Err(fetch.missing(file.names)),
                None => {}
            }
        }
        let indexes: Vec<PathBuf> = paths
            .values()
            .filter(|path| is_shard_index(path))
            .cloned()
            .collect();
        for index in indexes {
            for shard in shard_names(repo, &index)? {
                if fetch.first(&[shard.as_str()])?.is_none() {
                    return Err(fetch.missing(&[shard.as_str()]));
                }
            }
        }
        Ok(paths)
    }
}

/// The files of one repository revision, fetched one after another.
struct RepoFetch<'a> {
    client: &'a HubClient,
    repo: &'a str,
    revision: &'a str,
    cache: RepoCache,
    /// Set once the hub failed in a way the cache may answer for: the
    /// remaining files come from the cache, without waiting on the hub again.
    hub_failure: Option<ApiError>,
}

impl RepoFetch<'_> {
    /// The first of `names` the repository has (the cache's copy or a fresh
    /// download), or None when it has none of them or cannot be asked.
    fn first(&mut self, names: &[&str]) -> Result<Option<PathBuf>, LoadError> {
        let offline = self.client.config.offline;
        // A commit never changes: what the cache holds of it is final.
        if offline || self.hub_failure.is_some() || is_commit_hash(self.revision) {
            if let Some(path) = self.cached(names) {
                return Ok(Some(path));
            }
        }
        if offline || self.hub_failure.is_some() {
            return Ok(None);
        }
        for name in names {
            match self.client.api.head(self.repo, self.revision, name) {
                Ok(Head::Found(meta)) => return self.store(name, &meta).map(Some),
                Ok(Head::NotFound { commit }) => {
                    if let Some(commit) = commit {
                        // Remembered as huggingface_hub does (.no_exist), so
                        // an offline start knows the file was never there.
                        let _ = self.cache.mark_missing(&commit, name);
                        let _ = self.cache.set_ref(self.revision, &commit);
                    }
                }
                Err(error) if error.cache_may_answer() => {
                    let cached = self.cached(names);
                    if cached.is_some() {
                        tracing::warn!(
                            repo = self.repo,
                            revision = self.revision,
                            problem = %self.load_error(&error),
                            "the hub did not answer; serving the commit cached for this revision"
                        );
                    }
                    self.hub_failure = Some(error);
                    return Ok(cached);
                }
                Err(error) => return Err(self.file_error(name, &error)),
            }
        }
        Ok(None)
    }

    fn cached(&self, names: &[&str]) -> Option<PathBuf> {
        names
            .iter()
            .find_map(|name| self.cache.cached(self.revision, name))
    }

    /// Why none of `names` could be had.
    fn missing(&self, names: &[&str]) -> LoadError {
        let files = names.join(" or ");
        if let Some(failure) = &self.hub_failure {
            return self.file_error(&files, failure);
        }
        if self.client.config.offline {
            return LoadError::HubOffline {
                repo: self.repo.to_string(),
                revision: self.revision.to_string(),
                files,
                cache: self.cache.dir().display().to_string(),
            };
        }
        LoadError::HubFileNotFound {
            repo: self.repo.to_string(),
            revision: self.revision.to_string(),
            files,
        }
    }

    /// The snapshot path of `name`, downloading its blob unless cached.
    fn store(&self, name: &str, meta: &FileMeta) -> Result<PathBuf, LoadError> {
        let io_error = |error: std::io::Error| {
            LoadError::Io(format!(
                "cannot write the hub cache {}: {error}",
                self.cache.dir().display()
            ))
        };
        self.cache
            .set_ref(self.revision, &meta.commit)
            .map_err(io_error)?;
        let pointer = self.cache.snapshot_path(&meta.commit, name);
        if pointer.is_file() {
            return Ok(pointer);
        }
        let blob = self.cache.blob_path(&meta.etag);
        if !blob.is_file() {
            if let Some(blobs) = blob.parent() {
                fs::create_dir_all(blobs).map_err(io_error)?;
            }
            let mut incomplete = blob.clone().into_os_string();
            incomplete.push(".incomplete");
            let incomplete = PathBuf::from(incomplete);
            let from = without_query(&meta.location);
            tracing::info!(repo = self.repo, file = name, %from, "downloading");
            let bytes = self
                .client
                .api
                .download(meta, &incomplete)
                .map_err(|error| {
                    let _ = fs::remove_file(&incomplete);
                    self.file_error(name, &error)
                })?;
            fs::rename(&incomplete, &blob).map_err(io_error)?;
            tracing::info!(repo = self.repo, file = name, bytes, "downloaded");
        }
        self.cache
            .link(&meta.etag, &meta.commit, name)
            .map_err(io_error)
    }

    fn load_error(&self, error: &ApiError) -> LoadError {
        let repo = self.repo.to_string();
        match error {
            ApiError::Unreachable(detail) => LoadError::HubUnreachable {
                endpoint: self.client.config.endpoint.clone(),
                repo,
                detail: detail.clone(),
            },
            ApiError::Denied {
                status,
                with_token,
                message,
            } => {
                let advice = if *with_token {
                    "the token in HF_TOKEN cannot read it (for a gated model, accept its \
                     conditions on the hub with that account; check the repository name)"
                } else {
                    "it is private or gated, or does not exist; set HF_TOKEN to a token \
                     that can read it"
                };
                let hub_says = message
                    .as_ref()
                    .map(|message| format!(" (the hub says: {message})"))
                    .unwrap_or_default();
                LoadError::HubDenied {
                    repo,
                    detail: format!("HTTP {status}: {advice}{hub_says}"),
                }
            }
            ApiError::RevisionNotFound => LoadError::HubFile {
                repo,
                revision: self.revision.to_string(),
                file: "files".to_string(),
                detail: format!("revision '{}' not found", self.revision),
            },
            ApiError::Other(detail) => LoadError::HubFile {
                repo,
                revision: self.revision.to_string(),
                file: "a file".to_string(),
                detail: detail.clone(),
            },
        }
    }

    fn file_error(&self, name: &str, error: &ApiError) -> LoadError {
        match self.load_error(error) {
            LoadError::HubFile {
                repo,
                revision,
                detail,
                ..
            } => LoadError::HubFile {
                repo,
                revision,
                file: name.to_string(),
                detail,
            },
            other => other,
        }
    }
}

fn is_shard_index(path: &Path) -> bool {
    path.file_name()
        .is_some_and(|name| name.to_string_lossy().ends_with(".index.json"))
}

/// The shard files a sharded checkpoint's index names (its `weight_map`
/// values), each once; `generation::checkpoint` reads them from next to it.
fn shard_names(repo: &str, index: &Path) -> Result<BTreeSet<String>, LoadError> {
    let bad = |detail: String| LoadError::Model {
        source_name: repo.to_string(),
        detail,
    };
    let text = fs::read_to_string(index)
        .map_err(|error| bad(format!("cannot read {}: {error}", index.display())))?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .map_err(|error| bad(format!("{} is not JSON: {error}", index.display())))?;
    let map = json["weight_map"]
        .as_object()
        .ok_or_else(|| bad(format!("{} has no weight_map", index.display())))?;
    let mut shards = BTreeSet::new();
    for shard in map.values().filter_map(serde_json::Value::as_str) {
        // A shard name becomes a path in the cache: nothing that climbs out.
        if shard.is_empty() || shard.contains(['/', '\\']) || shard.starts_with('.') {
            return Err(bad(format!(
                "{} names an odd shard {shard}",
                index.display()
            )));
        }
        shards.insert(shard.to_string());
    }
    Ok(shards)
}
