//! Where a process's bundles come from: `--plugins` names a directory of
//! `*.wasm` files or a bundle list (a `.toml` file of registry references
//! and files, see `flowcraft_oci::BundleList`), and how the loaded set is
//! kept current: a directory is watched for change events and rescanned
//! every `--plugins-poll` seconds (file systems such as network mounts send
//! no events); a list's references are resolved again at the same interval,
//! and a changed digest is pulled, compiled off the job path and swapped in.
//! Every bundle loaded is kept by digest in `bundles/` of the cache
//! directory; a job of a run pinned to a bundle the host does not hold
//! fetches it by digest from there, and for a list also from the list's
//! repositories.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use flowcraft_azure::credential::CredentialKind;
use flowcraft_oci::{BundleList, BundleStore, ListResolver, Origin, ResolvedBundle};
use flowcraft_plugins::{BundleFetcher, PluginConfig, PluginHost, WatchGuard, default_cache_dir};
use tokio::task::JoinHandle;

use crate::registry_auth::registry_credentials;

/// How often `--plugins` is checked for changes nothing announces.
pub const DEFAULT_PLUGINS_POLL: Duration = Duration::from_secs(30);

/// A directory of bundles (with the store its bundles are kept in by
/// digest, when there is a cache directory), or a bundle list with its
/// resolver.
pub enum PluginSource {
    Directory(PathBuf, Option<BundleStore>),
    List(Arc<ListResolver>),
}

/// The bundles loaded from a source, with the registry origin of each file
/// that came from one.
pub struct LoadedPlugins {
    pub host: PluginHost,
    pub origins: BTreeMap<PathBuf, Origin>,
    /// A list's entries as files, in list order (empty for a directory).
    listed: Vec<PathBuf>,
}

/// Keeps a host's bundles current until dropped.
pub struct BundleUpdates {
    _watch: Option<WatchGuard>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for BundleUpdates {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl PluginSource {
    /// The source `path` names; pulled bundles are kept under `cache_dir`;
    /// `entra` reaches Azure Container Registries.
    pub fn open(
        path: &Path,
        cache_dir: Option<&Path>,
        entra: Option<CredentialKind>,
    ) -> Result<Self> {
        let store = cache_dir
            .map(Path::to_owned)
            .or_else(default_cache_dir)
            .map(|cache_dir| BundleStore::new(cache_dir.join("bundles")));
        if path.extension().is_none_or(|extension| extension != "toml") {
            if path.is_file() {
                bail!(
                    "--plugins {}: not a directory of bundles nor a bundle list (a .toml file)",
                    path.display()
                );
            }
            // A missing directory is reported by the loader.
            return Ok(Self::Directory(path.to_owned(), store));
        }
        let list = BundleList::read(path)?;
        let store = store.context("no cache directory for pulled bundles: give --cache-dir DIR")?;
        let credentials = registry_credentials(entra)?;
        Ok(Self::List(Arc::new(ListResolver::new(
            list,
            store,
            credentials,
        ))))
    }

    /// Loads the source's bundles with `config` (whose `plugins_dir` is
    /// set here: the directory, or the list's own directory).
    pub async fn load(&self, mut config: PluginConfig) -> Result<LoadedPlugins> {
        match self {
            Self::Directory(dir, store) => {
                config.plugins_dir = dir.clone();
                let host = PluginHost::load(config)
                    .await
                    .with_context(|| format!("cannot load plugins from {}", dir.display()))?;
                if let Some(store) = store {
                    keep_loaded(&host, store).await;
                    host.set_fetcher(Arc::new(PinnedSource::Store(store.clone())));
                }
                Ok(LoadedPlugins {
                    host,
                    origins: BTreeMap::new(),
                    listed: Vec::new(),
                })
            }
            Self::List(resolver) => {
                let list = resolver.list().path();
                config.plugins_dir = list.parent().unwrap_or(Path::new(".")).to_owned();
                let resolved = resolver.resolve().await?;
                let host = PluginHost::load_files(config, files(&resolved))
                    .await
                    .with_context(|| format!("cannot load the bundles of {}", list.display()))?;
                host.set_fetcher(Arc::new(PinnedSource::List(Arc::clone(resolver))));
                let listed = files(&resolved);
                let origins = resolved
                    .into_iter()
                    .filter_map(|bundle| Some((bundle.path, bundle.origin?)))
                    .collect();
                Ok(LoadedPlugins {
                    host,
                    origins,
                    listed,
                })
            }
        }
    }

    /// Keeps the bundles `loaded` from this source current, checking every `poll`.
    pub fn follow(&self, loaded: &LoadedPlugins, poll: Duration) -> Result<BundleUpdates> {
        let host = &loaded.host;
        match self {
            Self::Directory(dir, store) => {
                let watch = host.watch().with_context(|| {
                    format!("cannot watch {} for bundle changes", dir.display())
                })?;
                let mut tasks = vec![tokio::spawn(rescan_every(host.clone(), poll))];
                if let Some(store) = store {
                    tasks.push(tokio::spawn(keep_every_reload(host.clone(), store.clone())));
                }
                Ok(BundleUpdates {
                    _watch: Some(watch),
                    tasks,
                })
            }
            Self::List(resolver) => {
                let following = ListFollower {
                    resolver: Arc::clone(resolver),
                    host: host.clone(),
                    serving: loaded.listed.clone(),
                    refused: BTreeSet::new(),
                };
                Ok(BundleUpdates {
                    _watch: None,
                    tasks: vec![tokio::spawn(following.resolve_every(poll))],
                })
            }
        }
    }
}

/// Keeps a copy of every bundle `host` serves in `store`, by digest: a run
/// pinned to a bundle whose file is later replaced finds it there, also
/// after a restart. A copy that cannot be made is logged.
async fn keep_loaded(host: &PluginHost, store: &BundleStore) {
    for bundle in host.bundles() {
        let kept = bundle
            .digest
            .parse()
            .is_ok_and(|digest| store.get(&digest).is_some());
        if kept {
            continue;
        }
        let copied = match tokio::fs::read(&bundle.path).await {
            Ok(component) => store
                .put(&component)
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
            Err(error) => Err(error.to_string()),
        };
        if let Err(error) = copied {
            tracing::warn!(bundle = %bundle.name, path = %bundle.path.display(), %error,
                "cannot keep a copy of the bundle for runs pinned to it");
        }
    }
}

async fn keep_every_reload(host: PluginHost, store: BundleStore) {
    let mut reloads = host.reloads();
    while reloads.changed().await.is_ok() {
        keep_loaded(&host, &store).await;
    }
}

/// Where a host finds the bundles runs are pinned to: the store a
/// directory's bundles are kept in, or a bundle list's store and
/// repositories.
enum PinnedSource {
    Store(BundleStore),
    List(Arc<ListResolver>),
}

impl BundleFetcher for PinnedSource {
    fn fetch<'a>(
        &'a self,
        digest: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<Option<PathBuf>, String>> + Send + 'a>> {
        Box::pin(async move {
            let found = match self {
                Self::Store(store) => digest.parse().map(|digest| store.get(&digest)),
                Self::List(resolver) => resolver.fetch_digest(digest).await,
            };
            found.map_err(|error| error.to_string())
        })
    }
}

fn files(resolved: &[ResolvedBundle]) -> Vec<PathBuf> {
    resolved.iter().map(|bundle| bundle.path.clone()).collect()
}

async fn rescan_every(host: PluginHost, poll: Duration) {
    loop {
        tokio::time::sleep(poll).await;
        if let Err(error) = host.reload().await {
            tracing::warn!(%error, "cannot rescan the plugins directory; trying again later");
        }
    }
}

/// Follows a bundle list: its references resolved again at an interval,
/// each changed entry checked to load before it replaces what the entry
/// served (a broken bundle leaves the previous one serving).
struct ListFollower {
    resolver: Arc<ListResolver>,
    host: PluginHost,
    /// What each entry serves, in list order.
    serving: Vec<PathBuf>,
    /// Files that did not load; not tried again (a fixed bundle has another digest).
    refused: BTreeSet<PathBuf>,
}

impl ListFollower {
    async fn resolve_every(mut self, poll: Duration) {
        loop {
            tokio::time::sleep(poll).await;
            let resolved = match self.resolver.resolve().await {
                Ok(resolved) => resolved,
                Err(error) => {
                    tracing::warn!(%error, "cannot resolve the bundle list; the bundles loaded keep serving");
                    continue;
                }
            };
            let next = self.accepted(resolved).await;
            if next == self.serving {
                continue;
            }
            match self.host.replace_files(next.clone()).await {
                Ok(()) => self.serving = next,
                Err(error) => tracing::warn!(%error, "cannot load the bundle list's bundles"),
            }
        }
    }

    /// The files to serve: each entry's new file if it loads, else the one
    /// it served before.
    async fn accepted(&mut self, resolved: Vec<ResolvedBundle>) -> Vec<PathBuf> {
        let mut next = Vec::with_capacity(resolved.len());
        for (entry, bundle) in resolved.into_iter().enumerate() {
            let before = self.serving.get(entry);
            if before == Some(&bundle.path) {
                next.push(bundle.path);
                continue;
            }
            if !self.refused.contains(&bundle.path) {
                match self.host.check_file(&bundle.path).await {
                    Ok(_) => {
                        next.push(bundle.path);
                        continue;
                    }
                    Err(error) => {
                        let reference = bundle
                            .origin
                            .as_ref()
                            .map_or("", |origin| origin.reference.as_str());
                        tracing::error!(%reference, %error,
                            "the bundle the list now names does not load; the one before keeps serving");
                        self.refused.insert(bundle.path);
                    }
                }
            }
            next.extend(before.cloned());
        }
        next
    }
}
