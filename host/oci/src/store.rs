//! The bundle store: pulled components by content digest,
//! `<root>/sha256/<hex>.wasm`. A file is written under a temporary name and
//! renamed into place, so a reader never sees half a component, and its name
//! is the digest of its bytes, so a file found is the bundle asked for.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::digest::Digest;
use crate::error::OciError;

/// A directory of components named by their digests.
#[derive(Debug, Clone)]
pub struct BundleStore {
    root: PathBuf,
}

impl BundleStore {
    /// The store under `root` (created on the first write).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// Where the component with `digest` is (or would be) kept.
    pub fn path(&self, digest: &Digest) -> PathBuf {
        self.root
            .join("sha256")
            .join(format!("{}.wasm", digest.hex()))
    }

    /// The kept component with `digest`, if there is one.
    pub fn get(&self, digest: &Digest) -> Option<PathBuf> {
        let path = self.path(digest);
        path.is_file().then_some(path)
    }

    /// The store's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Keeps `component` and answers its digest and path.
    pub async fn put(&self, component: &[u8]) -> Result<(Digest, PathBuf), OciError> {
        let digest = Digest::of(component);
        let path = self.path(&digest);
        if path.is_file() {
            return Ok((digest, path));
        }
        self.write_file(&path, component).await?;
        Ok((digest, path))
    }

    /// Writes `bytes` to `path` (inside the store) under a temporary name,
    /// then renames it into place.
    pub(crate) async fn write_file(&self, path: &Path, bytes: &[u8]) -> Result<(), OciError> {
        let dir = path.parent().unwrap_or(&self.root);
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|source| store_error(dir, source))?;
        // A name of this write's own: writers of the same file (two fetches
        // of one bundle) each rename a whole file into place.
        static WRITES: AtomicU64 = AtomicU64::new(0);
        let write = WRITES.fetch_add(1, Ordering::Relaxed);
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let temporary = dir.join(format!(".{name}.{}-{write}.partial", std::process::id()));
        tokio::fs::write(&temporary, bytes)
            .await
            .map_err(|source| store_error(&temporary, source))?;
        tokio::fs::rename(&temporary, path)
            .await
            .map_err(|source| store_error(path, source))
    }
}

fn store_error(path: &Path, source: std::io::Error) -> OciError {
    OciError::Store {
        path: path.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_component_is_kept_under_its_digest() {
        let dir = tempfile::tempdir().unwrap();
        let store = BundleStore::new(dir.path());
        let (digest, path) = store.put(b"component").await.unwrap();
        assert_eq!(digest, Digest::of(b"component"));
        assert_eq!(store.get(&digest), Some(path.clone()));
        assert_eq!(std::fs::read(&path).unwrap(), b"component");
        assert_eq!(store.get(&Digest::of(b"other")), None);
        let again = store.put(b"component").await.unwrap();
        assert_eq!(again, (digest, path));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writers_of_one_component_at_once_all_succeed() {
        let dir = tempfile::tempdir().unwrap();
        let store = BundleStore::new(dir.path());
        let component = vec![7u8; 4 << 20];
        let put = || store.put(&component);
        let written = tokio::join!(put(), put(), put(), put());
        for result in [written.0, written.1, written.2, written.3] {
            assert_eq!(result.unwrap().0, Digest::of(&component));
        }
    }
}
