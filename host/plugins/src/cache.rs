//! Compile once per bundle content: an on-disk cache of precompiled
//! components.
//!
//! Artifacts live in `<cache dir>/engine-<hash>/<sha256 of the .wasm>.cwasm`,
//! where `<hash>` is derived from wasmtime's precompile compatibility hash
//! (wasmtime version, target, compiler flags, engine tunables). An engine with
//! different settings therefore never sees another engine's artifacts. Files
//! are written to a temporary name and renamed into place, so a reader never
//! sees a partial artifact. Any problem with the cache (unwritable directory,
//! unreadable artifact) is logged and the bundle is compiled instead: the
//! cache can only make loading faster, never make it fail.
//!
//! Artifacts are native code that wasmtime loads without re-validating it:
//! the cache directory must be writable only by the user running the host.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use flowcraft_core::telemetry;
use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use crate::error::chain;

/// Where a component came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Loaded from a precompiled artifact.
    Hit,
    /// Compiled now (and written to the cache when one is configured).
    Compiled,
}

/// The on-disk artifact cache of one engine configuration.
pub(crate) struct ArtifactCache {
    /// `<cache dir>/engine-<hash>`, or `None` when caching is off.
    dir: Option<PathBuf>,
}

impl ArtifactCache {
    /// A cache under `root` for artifacts of `engine`; `None` disables it.
    pub fn new(root: Option<PathBuf>, engine: &Engine) -> Self {
        let dir = root.map(|root| root.join(format!("engine-{}", engine_key(engine))));
        Self { dir }
    }

    /// The compiled component for `wasm` (whose sha256 is `digest_hex`),
    /// from the cache when possible. Blocking: call from `spawn_blocking`.
    pub fn component(
        &self,
        engine: &Engine,
        wasm: &[u8],
        digest_hex: &str,
    ) -> Result<(Component, CacheOutcome), wasmtime::Error> {
        if let Some(component) = self.lookup(engine, digest_hex) {
            telemetry::compile_cache(true);
            return Ok((component, CacheOutcome::Hit));
        }
        telemetry::compile_cache(false);
        let component = Component::new(engine, wasm)?;
        self.store(digest_hex, &component);
        Ok((component, CacheOutcome::Compiled))
    }

    /// Where the compiled code of the bundle whose sha256 is `digest_hex` is
    /// (or would be) kept; `None` when caching is off.
    pub fn artifact_path(&self, digest_hex: &str) -> Option<PathBuf> {
        Some(self.dir.as_ref()?.join(format!("{digest_hex}.cwasm")))
    }

    fn lookup(&self, engine: &Engine, digest_hex: &str) -> Option<Component> {
        let path = self.artifact_path(digest_hex)?;
        if !path.is_file() {
            return None;
        }
        // SAFETY: the artifact was produced by `Component::serialize` of an
        // engine with the same compatibility hash (it is in the directory
        // name) and written atomically; the cache directory is trusted (see
        // the module docs). wasmtime still checks the header and the engine
        // settings recorded in the artifact.
        match unsafe { Component::deserialize_file(engine, &path) } {
            Ok(component) => Some(component),
            Err(error) => {
                tracing::warn!(path = %path.display(), error = %chain(&error),
                    "ignoring unusable cached artifact; recompiling");
                let _ = std::fs::remove_file(&path);
                None
            }
        }
    }

    fn store(&self, digest_hex: &str, component: &Component) {
        let Some(path) = self.artifact_path(digest_hex) else {
            return;
        };
        if let Err(error) = write_artifact(&path, component) {
            tracing::warn!(path = %path.display(), %error,
                "cannot write the compiled-bundle cache; bundles will be recompiled at the next start");
        }
    }
}

fn write_artifact(path: &Path, component: &Component) -> Result<(), String> {
    static SEQUENCE: AtomicU64 = AtomicU64::new(0);
    let bytes = component.serialize().map_err(|e| chain(&e))?;
    let dir = path.parent().expect("artifact paths have a parent");
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let temp = dir.join(format!(
        ".{}.{}.{}.tmp",
        path.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id(),
        SEQUENCE.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&temp, &bytes).map_err(|e| e.to_string())?;
    std::fs::rename(&temp, path).map_err(|e| {
        let _ = std::fs::remove_file(&temp);
        e.to_string()
    })
}

/// A stable hex key for the engine's precompile compatibility.
fn engine_key(engine: &Engine) -> String {
    let mut hasher = Sha256Hasher(Sha256::new());
    engine.precompile_compatibility_hash().hash(&mut hasher);
    hex::encode(&hasher.0.finalize()[..8])
}

/// Feeds `Hash` output into sha256, which (unlike `DefaultHasher`) is stable
/// across Rust releases and processes.
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn finish(&self) -> u64 {
        let digest = self.0.clone().finalize();
        u64::from_le_bytes(digest[..8].try_into().expect("8 bytes"))
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}
