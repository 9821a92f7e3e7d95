//! Where model files come from: a local directory laid out like a hub
//! snapshot, or a hub repository downloaded once into a cache.

pub mod hub;
pub mod hub_api;
pub mod hub_cache;
pub mod hub_config;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::configuration::{HubSettings, ModelSettings};
use crate::engine::LoadError;

/// A file a model needs, under any of several names (the first found wins).
#[derive(Debug, Clone, Copy)]
pub struct FileWanted {
    /// Accepted names, in order of preference; the first is the file's key.
    pub names: &'static [&'static str],
    pub required: bool,
}

impl FileWanted {
    pub const fn required(names: &'static [&'static str]) -> Self {
        Self {
            names,
            required: true,
        }
    }

    pub const fn optional(names: &'static [&'static str]) -> Self {
        Self {
            names,
            required: false,
        }
    }
}

/// Weights as rust-bert/tch files, safetensors, or sharded safetensors (an
/// index naming shards next to it; `generation::checkpoint` reads them all).
pub const WEIGHTS: FileWanted = FileWanted::required(&[
    "rust_model.ot",
    "model.safetensors",
    "model.safetensors.index.json",
]);
pub const CONFIG: FileWanted = FileWanted::required(&["config.json"]);

/// The local paths of a model's files.
#[derive(Debug, Clone)]
pub struct ModelFiles {
    /// The configured source, for messages and the `model` response field.
    pub source: String,
    paths: HashMap<&'static str, PathBuf>,
}

impl ModelFiles {
    /// The path of a wanted file, by its first name.
    pub fn get(&self, key: &str) -> Option<&Path> {
        self.paths.get(key).map(PathBuf::as_path)
    }

    /// The path of a required file.
    pub fn require(&self, key: &str) -> Result<&Path, LoadError> {
        self.get(key).ok_or_else(|| LoadError::MissingFile {
            dir: self.source.clone(),
            names: key.to_string(),
        })
    }
}

/// A configured model source and the hub it may come from.
#[derive(Debug, Clone)]
pub struct ModelLocation {
    pub model: ModelSettings,
    pub hub: HubSettings,
}

impl ModelLocation {
    /// Finds (and, for hub sources, downloads) the wanted files.
    pub fn resolve(&self, wanted: &[FileWanted]) -> Result<ModelFiles, LoadError> {
        resolve(&self.model, &self.hub, wanted)
    }
}

/// Finds (and, for hub sources, downloads) the wanted files.
pub fn resolve(
    model: &ModelSettings,
    hub: &HubSettings,
    wanted: &[FileWanted],
) -> Result<ModelFiles, LoadError> {
    let paths = match model.local_dir() {
        Some(dir) => local_files(dir, wanted)?,
        None => hub::HubClient::new(hub)?.fetch(&model.source, &model.revision, wanted)?,
    };
    Ok(ModelFiles {
        source: model.source.clone(),
        paths,
    })
}

fn local_files(
    dir: &Path,
    wanted: &[FileWanted],
) -> Result<HashMap<&'static str, PathBuf>, LoadError> {
    if !dir.is_dir() {
        return Err(LoadError::Io(format!(
            "model directory {} does not exist",
            dir.display()
        )));
    }
    let mut paths = HashMap::new();
    for file in wanted {
        let found = file
            .names
            .iter()
            .map(|name| dir.join(name))
            .find(|path| path.is_file());
        match found {
            Some(path) => {
                paths.insert(file.names[0], path);
            }
            None if file.required => {
                return Err(LoadError::MissingFile {
                    dir: dir.display().to_string(),
                    names: file.names.join(", "),
                })
            }
            None => {}
        }
    }
    Ok(paths)
}
