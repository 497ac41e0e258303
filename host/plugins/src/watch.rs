//! Hot swap: watch the plugins directory and reload it when bundles change.
//!
//! File-system events (via `notify`) are debounced; then the directory is
//! rescanned by [`crate::PluginHost::reload`], which compiles new or changed
//! bundles off the async threads and swaps the registry atomically. Calls in
//! flight keep the bundle they started with. To replace a bundle safely,
//! write it under another name (e.g. `orders.wasm.tmp`) and rename it over
//! the old file; a half-written file is reported as broken and retried on the
//! next change, while the old version keeps serving.

use std::path::Path;
use std::sync::Weak;
use std::time::Duration;

use notify::event::{AccessKind, AccessMode, MetadataKind, ModifyKind};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::error::PluginError;
use crate::host::{Inner, PluginHost};

/// Quiet time after the last event before reloading.
const DEBOUNCE: Duration = Duration::from_millis(50);

/// Keeps the watcher running; dropping it stops watching.
pub struct WatchGuard {
    _watcher: RecommendedWatcher,
    task: JoinHandle<()>,
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub(crate) fn start(host: &PluginHost) -> Result<WatchGuard, PluginError> {
    let dir = host.config().plugins_dir.clone();
    let watch_error = |source| PluginError::Watch {
        path: dir.clone(),
        source,
    };
    let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
        watch_error(notify::Error::generic(
            "watching needs a tokio runtime; call PluginHost::watch from async code",
        ))
    })?;
    let (sender, events) = mpsc::unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |event| {
        let _ = sender.send(event);
    })
    .map_err(watch_error)?;
    watcher
        .watch(&dir, RecursiveMode::NonRecursive)
        .map_err(watch_error)?;
    let task = runtime.spawn(reload_on_change(
        std::sync::Arc::downgrade(&host.inner),
        events,
    ));
    Ok(WatchGuard {
        _watcher: watcher,
        task,
    })
}

async fn reload_on_change(
    host: Weak<Inner>,
    mut events: mpsc::UnboundedReceiver<notify::Result<Event>>,
) {
    while let Some(event) = events.recv().await {
        let mut relevant = is_relevant(&event);
        loop {
            match tokio::time::timeout(DEBOUNCE, events.recv()).await {
                Ok(Some(event)) => relevant |= is_relevant(&event),
                Ok(None) => return,
                Err(_quiet) => break,
            }
        }
        if !relevant {
            continue;
        }
        let Some(host) = host.upgrade() else { return };
        if let Err(error) = host.rescan().await {
            tracing::error!(%error, "reloading the plugins directory failed");
        }
    }
}

/// Whether an event may change which bundles are served. Reads (including
/// the host's own) and access-time updates are not.
fn is_relevant(event: &notify::Result<Event>) -> bool {
    let Ok(event) = event else { return true };
    let kind_matters = match event.kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        EventKind::Modify(ModifyKind::Metadata(kind)) => {
            matches!(kind, MetadataKind::WriteTime | MetadataKind::Any)
        }
        _ => true,
    };
    kind_matters && (event.paths.is_empty() || event.paths.iter().any(|p| is_bundle_path(p)))
}

/// `*.wasm`, not hidden.
pub(crate) fn is_bundle_path(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    !name.starts_with('.') && path.extension().is_some_and(|ext| ext == "wasm")
}
