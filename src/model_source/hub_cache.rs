//! One repository in the hub cache, laid out exactly as Python's
//! huggingface_hub lays it out (`file_download.py`), so a model either of
//! them downloaded is used by the other:
//!
//! ```text
//! <cache>/models--<org>--<name>/
//!   refs/<revision>            the commit a branch or tag resolved to when last asked
//!   blobs/<etag>               file contents, named by the hub's ETag
//!   snapshots/<commit>/<file>  relative symlinks into blobs/
//!   .no_exist/<commit>/<file>  empty: the hub said the file is not in that commit
//! ```

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// A full commit hash (huggingface_hub's `REGEX_COMMIT_HASH`): such a revision
/// never moves, so its cached files need no network at all.
pub fn is_commit_hash(revision: &str) -> bool {
    revision.len() == 40
        && revision
            .bytes()
            .all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte))
}

/// The cache of one model repository.
#[derive(Debug, Clone)]
pub struct RepoCache {
    dir: PathBuf,
}

impl RepoCache {
    pub fn new(cache_dir: &Path, repo: &str) -> RepoCache {
        RepoCache {
            dir: cache_dir.join(format!("models--{}", repo.replace('/', "--"))),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The commit `revision` stands for, as far as the cache knows.
    pub fn commit(&self, revision: &str) -> Option<String> {
        if is_commit_hash(revision) {
            return Some(revision.to_string());
        }
        let commit = fs::read_to_string(self.dir.join("refs").join(revision)).ok()?;
        Some(commit.trim().to_string()).filter(|commit| !commit.is_empty())
    }

    /// The cached file `name` of `revision`, if the cache has it.
    pub fn cached(&self, revision: &str, name: &str) -> Option<PathBuf> {
        let path = self.snapshot_path(&self.commit(revision)?, name);
        path.is_file().then_some(path)
    }

    /// Whether the hub said `name` is not in the commit `revision` stands for.
    pub fn known_missing(&self, revision: &str, name: &str) -> bool {
        self.commit(revision)
            .is_some_and(|commit| self.dir.join(".no_exist").join(commit).join(name).is_file())
    }

    pub fn snapshot_path(&self, commit: &str, name: &str) -> PathBuf {
        self.dir.join("snapshots").join(commit).join(name)
    }

    pub fn blob_path(&self, etag: &str) -> PathBuf {
        self.dir.join("blobs").join(etag)
    }

    /// Remembers that `revision` (a branch or tag) now stands for `commit`.
    pub fn set_ref(&self, revision: &str, commit: &str) -> io::Result<()> {
        if revision == commit {
            return Ok(());
        }
        let path = self.dir.join("refs").join(revision);
        if fs::read_to_string(&path).is_ok_and(|known| known == commit) {
            return Ok(());
        }
        create_parent(&path)?;
        // Written whole, then renamed: a reader never sees half a hash.
        let partial = path.with_file_name(format!(
            ".{}.partial",
            path.file_name()
                .map(|name| name.to_string_lossy())
                .unwrap_or_default()
        ));
        fs::write(&partial, commit)?;
        fs::rename(&partial, &path)
    }

    /// Remembers that the hub has no `name` in `commit`.
    pub fn mark_missing(&self, commit: &str, name: &str) -> io::Result<()> {
        let path = self.dir.join(".no_exist").join(commit).join(name);
        create_parent(&path)?;
        fs::write(path, b"")
    }

    /// Points `snapshots/<commit>/<name>` at `blobs/<etag>` with a relative
    /// symlink (so the cache can be moved or mounted elsewhere), as
    /// huggingface_hub's `_create_symlink` does.
    pub fn link(&self, etag: &str, commit: &str, name: &str) -> io::Result<PathBuf> {
        let pointer = self.snapshot_path(commit, name);
        create_parent(&pointer)?;
        // From snapshots/<commit>/<dirs of name>/ back up to the repo folder.
        let depth = 2 + Path::new(name).components().count() - 1;
        let mut target = PathBuf::new();
        for _ in 0..depth {
            target.push("..");
        }
        target.push("blobs");
        target.push(etag);
        match fs::remove_file(&pointer) {
            Err(error) if error.kind() != io::ErrorKind::NotFound => return Err(error),
            _ => {}
        }
        std::os::unix::fs::symlink(&target, &pointer)?;
        Ok(pointer)
    }
}

fn create_parent(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(parent) => fs::create_dir_all(parent),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_huggingface_hub() {
        let root = std::env::temp_dir().join(format!("nlp-serve-layout-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let cache = RepoCache::new(&root, "org/name");
        assert_eq!(cache.dir(), root.join("models--org--name"));
        let commit = "0123456789abcdef0123456789abcdef01234567";
        assert!(is_commit_hash(commit));
        assert!(!is_commit_hash("main"));
        assert_eq!(cache.commit("main"), None);
        cache.set_ref("main", commit).expect("ref");
        assert_eq!(
            fs::read_to_string(root.join("models--org--name/refs/main")).expect("ref"),
            commit
        );
        fs::create_dir_all(root.join("models--org--name/blobs")).expect("blobs");
        fs::write(cache.blob_path("abc"), "{}").expect("blob");
        let pointer = cache.link("abc", commit, "config.json").expect("link");
        assert_eq!(
            fs::read_link(&pointer).expect("symlink"),
            PathBuf::from("../../blobs/abc")
        );
        assert_eq!(cache.cached("main", "config.json"), Some(pointer));
        assert_eq!(cache.cached("main", "other.json"), None);
        let nested = cache.link("abc", commit, "sub/config.json").expect("link");
        assert_eq!(
            fs::read_link(nested).expect("symlink"),
            PathBuf::from("../../../blobs/abc")
        );
        cache.mark_missing(commit, "rust_model.ot").expect("marker");
        assert!(cache.known_missing("main", "rust_model.ot"));
        assert!(!cache.known_missing("main", "config.json"));
        let _ = fs::remove_dir_all(root);
    }
}
