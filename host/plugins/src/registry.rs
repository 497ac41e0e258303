//! Which bundle serves which `uses` key, and pinning.
//!
//! A [`Registry`] is an immutable snapshot: the bundles currently *serving*
//! (loaded from files in the plugins directory) plus *retired* versions that
//! were replaced or removed but stay loaded, so that runs pinned to them keep
//! working. Hot swap builds a new snapshot and swaps it in atomically; a call
//! that already holds a bundle finishes on it.
//!
//! Resolution rules:
//! - a blueprint may bind bundles in `metadata.plugins` (name → version,
//!   version requirement, or digest); a bound bundle provides every node type
//!   it implements for that blueprint;
//! - otherwise a `uses` key must be implemented by bundles of exactly one
//!   name (two differently named bundles claiming a key is an error, unless a
//!   binding decides), and the highest semantic version of that name wins.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use flowcraft_core::blueprint::{Blueprint, BundleRequirement};
use flowcraft_core::builtin::is_builtin;
use flowcraft_core::runner::{NodeFailure, PinError, Pins};
use serde_json::Value;

use crate::bundle::Bundle;

/// A snapshot of the loaded bundles.
#[derive(Default)]
pub(crate) struct Registry {
    /// Serving bundles, by name ascending then version descending.
    serving: Vec<Arc<Bundle>>,
    /// Serving and retired bundles by digest.
    resident: HashMap<String, Arc<Bundle>>,
}

impl Registry {
    /// A snapshot serving `serving` and keeping `retired` resident.
    pub fn new(mut serving: Vec<Arc<Bundle>>, retired: &[Arc<Bundle>]) -> Self {
        serving.sort_by(|a, b| {
            a.info
                .name
                .cmp(&b.info.name)
                .then_with(|| b.version.cmp(&a.version))
                .then_with(|| a.info.path.cmp(&b.info.path))
        });
        serving.dedup_by(|a, b| a.info.digest == b.info.digest);
        let resident = serving
            .iter()
            .chain(retired)
            .map(|bundle| (bundle.info.digest.clone(), Arc::clone(bundle)))
            .collect();
        Self { serving, resident }
    }

    /// The serving bundles.
    pub fn serving(&self) -> &[Arc<Bundle>] {
        &self.serving
    }

    /// Whether the bundle with `digest` is loaded (serving or retired).
    pub fn holds(&self, digest: &str) -> bool {
        self.resident.contains_key(digest)
    }

    /// Whether a serving bundle implements `uses`.
    pub fn implements(&self, uses: &str) -> bool {
        self.serving.iter().any(|bundle| bundle.implements(uses))
    }

    /// The bundle to run `uses` on, for a call pinned (or not) to a digest.
    pub fn for_call(&self, uses: &str, pin: Option<&str>) -> Result<Arc<Bundle>, NodeFailure> {
        match pin {
            Some(digest) => match self.resident.get(digest) {
                Some(bundle) if bundle.implements(uses) => Ok(Arc::clone(bundle)),
                Some(bundle) => Err(NodeFailure::fatal(format!(
                    "bundle {}@{} (pinned for this run as {digest}) does not implement node type '{uses}'",
                    bundle.info.name, bundle.info.version
                ))),
                None => Err(NodeFailure::retryable(format!(
                    "node type '{uses}': the bundle this run is pinned to ({digest}) is no longer loaded; \
                     put that bundle back into the plugins directory, or start a new run"
                ))),
            },
            None => match self.resolve(uses) {
                Ok(bundle) => Ok(Arc::clone(bundle)),
                Err(Unresolved::Missing) => Err(NodeFailure::fatal(format!(
                    "Implementation for '{uses}' not found."
                ))),
                Err(Unresolved::Ambiguous(message)) => Err(NodeFailure::fatal(message)),
            },
        }
    }

    /// Whether the bundle that serves `spawner` for a call pinned (or not)
    /// to `pin` — the bundle [`Registry::for_call`] picks — also implements
    /// `uses`. False when no bundle serves `spawner`.
    pub fn shares_bundle(&self, spawner: &str, pin: Option<&str>, uses: &str) -> bool {
        self.for_call(spawner, pin)
            .is_ok_and(|bundle| bundle.implements(uses))
    }

    /// Chooses the bundle digest for every plugin `uses` key of `blueprint`.
    /// Keys no bundle implements are left out (their calls fail with
    /// "Implementation for '…' not found.", as upstream).
    pub fn pin(&self, blueprint: &Blueprint) -> Result<Pins, PinError> {
        let bindings = blueprint.plugin_bindings().map_err(PinError)?;
        let bound = bindings
            .iter()
            .map(|(name, requirement)| self.resolve_binding(name, requirement))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|message| PinError(format!("blueprint '{}': {message}", blueprint.id)))?;
        let mut pins = Pins::new();
        for (node_id, uses) in plugin_uses(blueprint) {
            if pins.contains_key(uses) {
                continue;
            }
            let from_bound: Vec<&Arc<Bundle>> = bound
                .iter()
                .copied()
                .filter(|b| b.implements(uses))
                .collect();
            let bundle = match from_bound.as_slice() {
                [bundle] => *bundle,
                [] => match self.resolve(uses) {
                    Ok(bundle) => bundle,
                    Err(Unresolved::Missing) => continue,
                    Err(Unresolved::Ambiguous(message)) => {
                        return Err(PinError(format!(
                            "blueprint '{}', node '{node_id}': {message}",
                            blueprint.id
                        )));
                    }
                },
                several => {
                    return Err(PinError(format!(
                        "blueprint '{}', node '{node_id}': node type '{uses}' is implemented by several \
                         bundles bound in metadata.plugins ({}); bind only one of them",
                        blueprint.id,
                        labels(several.iter().copied())
                    )));
                }
            };
            pins.insert(uses.to_owned(), bundle.info.digest.clone());
        }
        Ok(pins)
    }

    /// The serving bundle for an unbound `uses` key.
    fn resolve(&self, uses: &str) -> Result<&Arc<Bundle>, Unresolved> {
        let candidates: Vec<&Arc<Bundle>> =
            self.serving.iter().filter(|b| b.implements(uses)).collect();
        let Some(first) = candidates.first() else {
            return Err(Unresolved::Missing);
        };
        let names: BTreeSet<&str> = candidates.iter().map(|b| b.info.name.as_str()).collect();
        if names.len() > 1 {
            return Err(Unresolved::Ambiguous(format!(
                "node type '{uses}' is implemented by several bundles ({}); bind one of them in the \
                 blueprint's metadata.plugins, e.g. \"plugins\": {{\"{}\": \"{}\"}}",
                labels(candidates.iter().copied()),
                first.info.name,
                first.info.version
            )));
        }
        // Sorted by version, highest first.
        Ok(first)
    }

    /// The bundle a `metadata.plugins` entry selects.
    fn resolve_binding(
        &self,
        name: &str,
        requirement: &BundleRequirement,
    ) -> Result<&Arc<Bundle>, String> {
        let versions: Vec<&Arc<Bundle>> = self
            .serving
            .iter()
            .filter(|b| b.info.name == name)
            .collect();
        let loaded = || {
            if versions.is_empty() {
                format!("no bundle named '{name}' is loaded")
            } else {
                format!(
                    "loaded versions of '{name}': {}",
                    versions
                        .iter()
                        .map(|b| b.info.version.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        };
        if let Some(digest) = &requirement.digest {
            let digest = if digest.starts_with("sha256:") {
                digest.clone()
            } else {
                format!("sha256:{digest}")
            };
            let bundle = self.resident.get(&digest).ok_or_else(|| {
                format!(
                    "metadata.plugins.{name} asks for digest {digest}, which is not loaded ({})",
                    loaded()
                )
            })?;
            if bundle.info.name != name {
                return Err(format!(
                    "metadata.plugins.{name} asks for digest {digest}, but that is bundle '{}'",
                    bundle.info.name
                ));
            }
            if let Some(version) = &requirement.version
                && &bundle.info.version != version
            {
                return Err(format!(
                    "metadata.plugins.{name} asks for version {version} and digest {digest}, \
                     but that digest is version {}",
                    bundle.info.version
                ));
            }
            return Ok(bundle);
        }
        if let Some(version) = &requirement.version {
            if let Some(exact) = versions.iter().find(|b| &b.info.version == version) {
                return Ok(exact);
            }
            let matching = semver::VersionReq::parse(version)
                .ok()
                .and_then(|req| versions.iter().find(|b| req.matches(&b.version)));
            return matching.copied().ok_or_else(|| {
                format!(
                    "metadata.plugins.{name} asks for version {version}, which is not loaded ({})",
                    loaded()
                )
            });
        }
        versions
            .first()
            .copied()
            .ok_or_else(|| format!("metadata.plugins binds bundle '{name}', but {}", loaded()))
    }
}

/// Why an unbound `uses` key has no bundle.
enum Unresolved {
    Missing,
    Ambiguous(String),
}

/// `(node id, uses)` of every node that needs a plugin, including the worker
/// type batch-scatter nodes name in `params.workerUsesKey`.
fn plugin_uses(blueprint: &Blueprint) -> Vec<(&str, &str)> {
    let mut keys = Vec::new();
    for node in &blueprint.nodes {
        keys.push((node.id.as_str(), node.uses.as_str()));
        if let Some(Value::String(worker)) =
            node.params.as_ref().and_then(|p| p.get("workerUsesKey"))
        {
            keys.push((node.id.as_str(), worker.as_str()));
        }
    }
    keys.retain(|(_, uses)| !is_builtin(uses));
    keys
}

fn labels<'a>(bundles: impl Iterator<Item = &'a Arc<Bundle>>) -> String {
    bundles
        .map(|b| format!("{}@{}", b.info.name, b.info.version))
        .collect::<Vec<_>>()
        .join(", ")
}
