//! [`PluginHost`]: the plugin runtime as the engine sees it (a
//! [`NodeRunner`]), plus loading the plugins directory and reloading it.
//!
//! The host keeps one [`Registry`] snapshot behind an `ArcSwap`: calls read
//! it without locking; a reload (at start, from the watcher, or on request)
//! scans the directory, loads new and changed files, and swaps in a new
//! snapshot. A file that fails to load is reported (log + [`PluginHost::problems`])
//! and whatever version was loaded from it before keeps serving.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use flowcraft_core::blueprint::Blueprint;
use flowcraft_core::runner::{NodeCall, NodeOutcome, NodeRunner, PinError, Pins};
use serde::Serialize;
use tokio::sync::{Mutex, watch as channel};

use crate::bundle::{self, Bundle, BundleInfo, WasmFile};
use crate::cache::CacheOutcome;
use crate::call;
use crate::config::{Grants, PluginConfig};
use crate::engine::Runtime;
use crate::error::PluginError;
use crate::registry::Registry;
use crate::watch::{self, WatchGuard};

/// The WebAssembly plugin runtime: loads the bundles of a directory and runs
/// node calls in sandboxed instances. Cheap to clone.
#[derive(Clone)]
pub struct PluginHost {
    pub(crate) inner: Arc<Inner>,
}

/// Finds bundles by content digest, for runs pinned to a bundle this host
/// does not hold (say, a worker started after every worker was given the
/// bundle's next version).
pub trait BundleFetcher: Send + Sync + 'static {
    /// The file of the bundle whose content has `digest` (`sha256:…`):
    /// `Ok(None)` when no source has it, `Err` when a source could not be
    /// asked (each says what and where).
    fn fetch<'a>(
        &'a self,
        digest: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<Option<PathBuf>, String>> + Send + 'a>>;
}

pub(crate) struct Inner {
    config: PluginConfig,
    fetcher: OnceLock<Arc<dyn BundleFetcher>>,
    /// Held while a pinned bundle is fetched: the jobs of many pinned runs
    /// wait for one fetch instead of each making its own.
    fetching: Mutex<()>,
    runtime: Arc<Runtime>,
    registry: ArcSwap<Snapshot>,
    /// The directory as last scanned; held while a reload runs.
    dir: Mutex<DirState>,
    generation: channel::Sender<u64>,
}

/// The registry plus what went wrong while building it.
#[derive(Default)]
struct Snapshot {
    registry: Registry,
    problems: Vec<BundleProblem>,
}

/// A bundle file that could not be (re)loaded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BundleProblem {
    pub path: PathBuf,
    /// What was wrong and what to do.
    pub error: String,
}

#[derive(Default)]
struct DirState {
    /// The bundle files to serve when they are given one by one (a bundle
    /// list's); `None`: the `*.wasm` files of the plugins directory.
    listed: Option<Vec<PathBuf>>,
    files: BTreeMap<PathBuf, FileEntry>,
    /// Bundles no longer served, newest first; bounded by `retired_versions`.
    retired: VecDeque<Arc<Bundle>>,
    errors: BTreeMap<PathBuf, String>,
}

struct FileEntry {
    stamp: FileStamp,
    /// The bundle loaded from this file (kept when a newer write is broken).
    bundle: Option<Arc<Bundle>>,
}

/// Size and modification time: a file whose stamp is unchanged is not re-read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    len: u64,
    modified: Option<SystemTime>,
}

impl FileStamp {
    fn of(metadata: &std::fs::Metadata) -> Self {
        Self {
            len: metadata.len(),
            modified: metadata.modified().ok(),
        }
    }
}

impl PluginHost {
    /// Loads every bundle in `config.plugins_dir`. Fails only when a grant
    /// is invalid, the directory cannot be read or the engine cannot be set
    /// up; bundles that fail to load are logged and listed by
    /// [`PluginHost::problems`].
    pub async fn load(config: PluginConfig) -> Result<Self, PluginError> {
        check_grants(&config)?;
        let dir = config.plugins_dir.clone();
        let metadata =
            tokio::fs::metadata(&dir)
                .await
                .map_err(|source| PluginError::PluginsDir {
                    path: dir.clone(),
                    source,
                })?;
        if !metadata.is_dir() {
            return Err(PluginError::PluginsDir {
                path: dir,
                source: std::io::Error::new(std::io::ErrorKind::NotADirectory, "not a directory"),
            });
        }
        let host = Self::new(config, DirState::default())?;
        host.reload().await?;
        Ok(host)
    }

    /// Loads the bundle files `files` instead of a directory's (a bundle
    /// list, resolved to files); `config.plugins_dir` is where the list
    /// lives. A listed file that is missing or broken is reported like a
    /// broken file in a directory.
    pub async fn load_files(
        config: PluginConfig,
        files: Vec<PathBuf>,
    ) -> Result<Self, PluginError> {
        check_grants(&config)?;
        let listed = DirState {
            listed: Some(files),
            ..DirState::default()
        };
        let host = Self::new(config, listed)?;
        host.reload().await?;
        Ok(host)
    }

    /// Serves the bundle files `files` from now on (a host made by
    /// [`PluginHost::load_files`]): loads new ones and stops serving those
    /// no longer listed, which stay loaded for runs pinned to them.
    pub async fn replace_files(&self, files: Vec<PathBuf>) -> Result<(), PluginError> {
        self.inner.dir.lock().await.listed = Some(files);
        self.reload().await
    }

    fn new(config: PluginConfig, dir: DirState) -> Result<Self, PluginError> {
        let runtime = Arc::new(Runtime::new(&config, Some(config.effective_cache_dir()))?);
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                runtime,
                fetcher: OnceLock::new(),
                fetching: Mutex::new(()),
                registry: ArcSwap::default(),
                dir: Mutex::new(dir),
                generation: channel::Sender::new(0),
            }),
        })
    }

    /// Rescans the plugins directory now: loads new and changed bundles,
    /// stops serving removed ones, and bumps the reload generation.
    pub async fn reload(&self) -> Result<(), PluginError> {
        self.inner.rescan().await
    }

    /// Watches the plugins directory and reloads on changes (debounced),
    /// compiling in the background, until the guard is dropped. Needs a
    /// tokio runtime.
    pub fn watch(&self) -> Result<WatchGuard, PluginError> {
        watch::start(self)
    }

    /// The reload generation: incremented after every completed reload
    /// (whether or not anything changed). Await `changed()` on it to learn
    /// that a hot swap has been applied.
    pub fn reloads(&self) -> channel::Receiver<u64> {
        self.inner.generation.subscribe()
    }

    /// The bundles serving new calls, by name then version (highest first).
    pub fn bundles(&self) -> Vec<BundleInfo> {
        let snapshot = self.inner.registry.load();
        snapshot
            .registry
            .serving()
            .iter()
            .map(|bundle| bundle.info.clone())
            .collect()
    }

    /// Bundle files that could not be loaded at the last reload (the
    /// previously loaded version of such a file, if any, keeps serving).
    pub fn problems(&self) -> Vec<BundleProblem> {
        self.inner.registry.load().problems.clone()
    }

    /// Whether the compiled code of the bundle with `digest` came from the
    /// on-disk cache (`Some(true)`), was compiled (`Some(false)`), or no such
    /// bundle is loaded (`None`).
    pub fn loaded_from_cache(&self, digest: &str) -> Option<bool> {
        let snapshot = self.inner.registry.load();
        let bundle = snapshot
            .registry
            .serving()
            .iter()
            .find(|bundle| bundle.info.digest == digest)?;
        Some(bundle.cache == CacheOutcome::Hit)
    }

    /// The compiled code of the loaded bundle with `digest` in the on-disk
    /// cache, if caching is on and it was written.
    pub fn compiled_artifact(&self, digest: &str) -> Option<PathBuf> {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        let path = self.inner.runtime.cache.artifact_path(hex)?;
        path.is_file().then_some(path)
    }

    /// Loads `path` as a bundle without serving it (its compiled code goes
    /// to the compile cache): whether a file a source is about to list
    /// would load.
    pub async fn check_file(&self, path: &Path) -> Result<BundleInfo, PluginError> {
        let file = read_file(path.to_owned()).await?;
        let grants = |name: &str| self.inner.config.grants_for(name);
        Ok(bundle::load(&self.inner.runtime, file, grants).await?.info)
    }

    /// Fetches bundles that runs are pinned to but this host does not hold
    /// with `fetcher` (the first one set stays).
    pub fn set_fetcher(&self, fetcher: Arc<dyn BundleFetcher>) {
        let _ = self.inner.fetcher.set(fetcher);
    }

    /// The configuration the host runs with.
    pub fn config(&self) -> &PluginConfig {
        &self.inner.config
    }
}

impl NodeRunner for PluginHost {
    fn implements(&self, uses: &str) -> bool {
        self.inner.registry.load().registry.implements(uses)
    }

    fn pin(&self, blueprint: &Blueprint) -> Result<Pins, PinError> {
        self.inner.registry.load().registry.pin(blueprint)
    }

    async fn prepare(&self, uses: &str, pin: &str) -> Result<(), String> {
        if self.inner.registry.load().registry.holds(pin) {
            return Ok(());
        }
        let Some(fetcher) = self.inner.fetcher.get() else {
            return Err(format!(
                "node type '{uses}': the bundle this run is pinned to ({pin}) is not loaded here; \
                 put it back into the plugins directory, or start a new run"
            ));
        };
        let _one_fetch = self.inner.fetching.lock().await;
        if self.inner.registry.load().registry.holds(pin) {
            return Ok(());
        }
        let path = fetcher
            .fetch(pin)
            .await?
            .ok_or_else(|| format!("node type '{uses}': the bundle this run is pinned to ({pin}) is in none of the bundle sources; push it again to a repository of the bundle list and replay the job (poison replay), or start a new run"))?;
        self.inner.hold_pinned(pin, &path).await
    }

    async fn run(&self, call: NodeCall) -> NodeOutcome {
        let chosen = self
            .inner
            .registry
            .load()
            .registry
            .for_call(&call.uses, call.pin.as_deref());
        match chosen {
            Ok(bundle) => call::execute(&self.inner.runtime, &bundle, call).await,
            Err(failure) => NodeOutcome {
                context: call.context,
                result: Err(failure),
            },
        }
    }

    /// True when the bundle `run` would pick for `spawner` and `pin` also
    /// implements `uses`. Built-in node types are no bundle's (false): the
    /// engine decides about them.
    fn shares_bundle(&self, spawner: &str, pin: Option<&str>, uses: &str) -> bool {
        self.inner
            .registry
            .load()
            .registry
            .shares_bundle(spawner, pin, uses)
    }
}

/// Rejects grants that cannot be applied (an unusable `http` entry), before
/// any bundle loads.
fn check_grants(config: &PluginConfig) -> Result<(), PluginError> {
    for (bundle, grants) in &config.grants {
        grants.http_allow_list(bundle)?;
    }
    Ok(())
}

/// Validates one bundle file without a plugins directory (`plugins check`):
/// it must be a component implementing the `flowcraft:node@0.1` bundle
/// world whose `describe` returns a valid description.
pub async fn check_bundle(path: impl AsRef<Path>) -> Result<BundleInfo, PluginError> {
    let path = path.as_ref().to_owned();
    let mut config = PluginConfig::new(path.parent().unwrap_or(Path::new(".")));
    config.max_instances = 4;
    let runtime = Arc::new(Runtime::new(&config, None)?);
    let file = read_file(path).await?;
    let bundle = bundle::load(&runtime, file, |_| Grants::default()).await?;
    Ok(bundle.info)
}

async fn read_file(path: PathBuf) -> Result<WasmFile, PluginError> {
    let for_error = path.clone();
    tokio::task::spawn_blocking(move || WasmFile::read(&path))
        .await
        .map_err(|e| PluginError::Read {
            path: for_error,
            source: std::io::Error::other(e.to_string()),
        })?
}

impl Inner {
    pub(crate) async fn rescan(&self) -> Result<(), PluginError> {
        let mut dir = self.dir.lock().await;
        let (listing, missing) = match &dir.listed {
            Some(files) => stamp_listed_files(files),
            None => (
                list_bundle_files(&self.config.plugins_dir).await?,
                Vec::new(),
            ),
        };
        let previous: Vec<Arc<Bundle>> = self.registry.load().registry.serving().to_vec();

        dir.files.retain(|path, _| listing.contains_key(path));
        dir.errors.retain(|path, _| listing.contains_key(path));
        for path in missing {
            dir.errors
                .insert(path, "the listed bundle file does not exist".to_owned());
        }
        for (path, stamp) in listing {
            if dir
                .files
                .get(&path)
                .is_some_and(|entry| entry.stamp == stamp)
            {
                continue;
            }
            let loaded = self.load_file(&path, &dir).await;
            let entry = dir.files.entry(path.clone()).or_insert(FileEntry {
                stamp,
                bundle: None,
            });
            entry.stamp = stamp;
            match loaded {
                Ok(bundle) => {
                    tracing::info!(path = %path.display(), bundle = %bundle.label,
                        digest = %bundle.info.digest,
                        compiled = if bundle.cache == CacheOutcome::Hit { "cached" } else { "now" },
                        "loaded bundle");
                    entry.bundle = Some(bundle);
                    dir.errors.remove(&path);
                }
                Err(error) => {
                    let keeps = entry.bundle.as_ref().map(|b| b.label.to_string());
                    tracing::error!(path = %path.display(), %error,
                        still_serving = keeps.as_deref().unwrap_or("nothing"),
                        "cannot load bundle; the version loaded before (if any) keeps serving");
                    dir.errors.insert(path, error.to_string());
                }
            }
        }

        let (serving, conflicts) = choose_serving(&dir.files);
        retire(
            &mut dir.retired,
            &previous,
            &serving,
            self.config.retired_versions,
        );
        let mut problems: Vec<BundleProblem> = dir
            .errors
            .iter()
            .map(|(path, error)| BundleProblem {
                path: path.clone(),
                error: error.clone(),
            })
            .collect();
        problems.extend(conflicts);
        let retired: Vec<Arc<Bundle>> = dir.retired.iter().cloned().collect();
        self.registry.store(Arc::new(Snapshot {
            registry: Registry::new(serving, &retired),
            problems,
        }));
        drop(dir);
        self.generation.send_modify(|generation| *generation += 1);
        Ok(())
    }

    /// Loads the fetched bundle file `path`, which must have content digest
    /// `pin`, and keeps it resident (not serving) for the runs pinned to it.
    async fn hold_pinned(&self, pin: &str, path: &Path) -> Result<(), String> {
        let mut dir = self.dir.lock().await;
        if self.registry.load().registry.holds(pin) {
            return Ok(());
        }
        let bundle = self
            .load_file(path, &dir)
            .await
            .map_err(|error| format!("the bundle fetched for {pin} does not load: {error}"))?;
        if bundle.info.digest != pin {
            return Err(format!(
                "the bundle fetched for {pin} from {} has digest {}",
                path.display(),
                bundle.info.digest
            ));
        }
        tracing::info!(bundle = %bundle.label, digest = pin, path = %path.display(),
            "fetched a bundle runs are pinned to; kept loaded for them");
        dir.retired.push_front(bundle);
        dir.retired.truncate(self.config.retired_versions.max(1));
        let current = self.registry.load();
        let retired: Vec<Arc<Bundle>> = dir.retired.iter().cloned().collect();
        self.registry.store(Arc::new(Snapshot {
            registry: Registry::new(current.registry.serving().to_vec(), &retired),
            problems: current.problems.clone(),
        }));
        Ok(())
    }

    /// Loads `path`, reusing an already loaded bundle with the same content.
    async fn load_file(&self, path: &Path, dir: &DirState) -> Result<Arc<Bundle>, PluginError> {
        let file = read_file(path.to_owned()).await?;
        let digest = file.digest();
        let known = dir
            .files
            .values()
            .filter_map(|entry| entry.bundle.as_ref())
            .chain(dir.retired.iter())
            .find(|bundle| bundle.info.digest == digest);
        if let Some(bundle) = known {
            return Ok(Arc::clone(bundle));
        }
        let grants = |name: &str| self.config.grants_for(name);
        Ok(Arc::new(bundle::load(&self.runtime, file, grants).await?))
    }
}

/// The bundles to serve: one per file, except that of two files with the same
/// name and version but different content only the first (by path) serves.
fn choose_serving(files: &BTreeMap<PathBuf, FileEntry>) -> (Vec<Arc<Bundle>>, Vec<BundleProblem>) {
    let mut chosen: BTreeMap<(String, String), Arc<Bundle>> = BTreeMap::new();
    let mut conflicts = Vec::new();
    for (path, entry) in files {
        let Some(bundle) = &entry.bundle else {
            continue;
        };
        let key = (bundle.info.name.clone(), bundle.info.version.clone());
        match chosen.get(&key) {
            None => {
                chosen.insert(key, Arc::clone(bundle));
            }
            Some(first) if first.info.digest == bundle.info.digest => {}
            Some(first) => {
                let error = format!(
                    "bundle {} is also loaded from {} with different content; this file is not served \
                     (give it a new version or remove one of the files)",
                    bundle.label,
                    first.info.path.display()
                );
                tracing::error!(path = %path.display(), "{error}");
                conflicts.push(BundleProblem {
                    path: path.clone(),
                    error,
                });
            }
        }
    }
    (chosen.into_values().collect(), conflicts)
}

/// Moves bundles that stopped serving to the front of `retired`.
fn retire(
    retired: &mut VecDeque<Arc<Bundle>>,
    previous: &[Arc<Bundle>],
    serving: &[Arc<Bundle>],
    keep: usize,
) {
    let serves = |digest: &str| serving.iter().any(|b| b.info.digest == digest);
    retired.retain(|bundle| !serves(&bundle.info.digest));
    for bundle in previous {
        if !serves(&bundle.info.digest)
            && !retired.iter().any(|r| r.info.digest == bundle.info.digest)
        {
            tracing::info!(bundle = %bundle.label, digest = %bundle.info.digest,
                "bundle no longer serves new calls; kept loaded for runs pinned to it");
            retired.push_front(Arc::clone(bundle));
        }
    }
    retired.truncate(keep);
}

/// The stamps of listed bundle files, and the listed files that are missing.
/// (A list names a few files: their `stat`s run on the calling thread.)
fn stamp_listed_files(files: &[PathBuf]) -> (BTreeMap<PathBuf, FileStamp>, Vec<PathBuf>) {
    let mut stamps = BTreeMap::new();
    let mut missing = Vec::new();
    for path in files {
        match std::fs::metadata(path) {
            Ok(metadata) if metadata.is_file() => {
                stamps.insert(path.clone(), FileStamp::of(&metadata));
            }
            _ => missing.push(path.clone()),
        }
    }
    (stamps, missing)
}

/// The `*.wasm` files of `dir` (not hidden, not directories) with their stamps.
async fn list_bundle_files(dir: &Path) -> Result<BTreeMap<PathBuf, FileStamp>, PluginError> {
    let dir = dir.to_owned();
    let for_error = dir.clone();
    let listing = tokio::task::spawn_blocking(move || -> std::io::Result<_> {
        let mut files = BTreeMap::new();
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if !watch::is_bundle_path(&path) {
                continue;
            }
            let Ok(metadata) = std::fs::metadata(&path) else {
                continue;
            };
            if metadata.is_file() {
                files.insert(path, FileStamp::of(&metadata));
            }
        }
        Ok(files)
    })
    .await
    .map_err(|e| std::io::Error::other(e.to_string()))
    .and_then(|listing| listing);
    listing.map_err(|source| PluginError::PluginsDir {
        path: for_error,
        source,
    })
}
