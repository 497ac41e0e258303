//! A bundle list: the bundles a worker serves, named by registry reference
//! or by file, in a TOML file given as `--plugins`:
//!
//! ```toml
//! [[bundles]]
//! reference = "myacr.azurecr.io/nodes/orders:1.2.0"
//!
//! [[bundles]]
//! reference = "registry.internal:5000/nodes/greeter@sha256:…"
//! insecure = true        # plain HTTP to a registry that is not on this machine
//!
//! [[bundles]]
//! path = "local/audit.wasm"   # relative to the list file
//! ```
//!
//! [`ListResolver::resolve`] turns the list into files: a tag is resolved
//! to its manifest, the component is fetched into the [`BundleStore`] unless
//! it is there already, and the digests each reference resolved to are
//! remembered beside the store (`references.json`). A registry that cannot
//! be reached then costs nothing but freshness: the reference serves what
//! it resolved to last, also after a restart. Only a reference that never
//! resolved is an error. [`ListResolver::fetch_digest`] finds a bundle a run
//! is pinned to by its digest alone, in the store or in the list's
//! repositories.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use crate::credentials::Credentials;
use crate::digest::Digest;
use crate::error::OciError;
use crate::registry::Registry;
use crate::store::BundleStore;
use oci_client::Reference;

/// One entry of a bundle list.
#[derive(Debug, Clone, PartialEq)]
pub enum BundleEntry {
    /// A bundle in a registry, by tag or by manifest digest.
    Registry {
        reference: Reference,
        insecure: bool,
    },
    /// A local file.
    File(PathBuf),
}

/// A parsed bundle list file.
#[derive(Debug, Clone)]
pub struct BundleList {
    path: PathBuf,
    entries: Vec<BundleEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListFile {
    #[serde(default)]
    bundles: Vec<EntryFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryFile {
    reference: Option<String>,
    path: Option<PathBuf>,
    #[serde(default)]
    insecure: bool,
}

impl BundleList {
    /// Reads and checks the list at `path`.
    pub fn read(path: &Path) -> Result<Self, OciError> {
        let text =
            std::fs::read_to_string(path).map_err(|error| invalid(path, error.to_string()))?;
        Self::parse(path, &text)
    }

    /// Parses `text`, the list at `path` (file entries are relative to its directory).
    pub fn parse(path: &Path, text: &str) -> Result<Self, OciError> {
        let file: ListFile =
            toml::from_str(text).map_err(|error| invalid(path, error.to_string()))?;
        if file.bundles.is_empty() {
            return Err(invalid(
                path,
                "it lists no bundles; add [[bundles]] tables".into(),
            ));
        }
        let base = path.parent().unwrap_or(Path::new("."));
        let entries = file
            .bundles
            .into_iter()
            .enumerate()
            .map(|(index, entry)| {
                entry
                    .check(base)
                    .map_err(|detail| invalid(path, format!("bundle {}: {detail}", index + 1)))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            path: path.to_owned(),
            entries,
        })
    }

    /// The list file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn entries(&self) -> &[BundleEntry] {
        &self.entries
    }
}

impl EntryFile {
    fn check(self, base: &Path) -> Result<BundleEntry, String> {
        match (self.reference, self.path) {
            (Some(reference), None) => {
                let parsed = reference
                    .parse()
                    .map_err(|error| format!("'{reference}' is not an OCI reference ({error})"))?;
                Ok(BundleEntry::Registry {
                    reference: parsed,
                    insecure: self.insecure,
                })
            }
            (None, Some(path)) if self.insecure => Err(format!(
                "{} is a file; `insecure` applies to registries only",
                path.display()
            )),
            (None, Some(path)) => Ok(BundleEntry::File(base.join(path))),
            (Some(_), Some(_)) => Err("give either `reference` or `path`, not both".into()),
            (None, None) => Err(
                "give `reference = \"registry/repository:tag\"` or `path = \"file.wasm\"`".into(),
            ),
        }
    }
}

fn invalid(path: &Path, detail: String) -> OciError {
    OciError::BundleList {
        path: path.to_owned(),
        detail,
    }
}

/// A list entry as a file to load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedBundle {
    pub path: PathBuf,
    /// `None` for a file entry.
    pub origin: Option<Origin>,
}

/// Where a bundle of a registry entry came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    pub reference: String,
    pub manifest: String,
    pub component: String,
}

/// Resolves a bundle list to files, remembering what each reference
/// resolved to (see the module docs).
pub struct ListResolver {
    list: BundleList,
    store: BundleStore,
    credentials: Credentials,
    remembered: Mutex<BTreeMap<String, Origin>>,
    remembered_path: PathBuf,
}

impl ListResolver {
    /// A resolver of `list` that keeps components in `store` and remembers
    /// resolutions in `references.json` beside it.
    pub fn new(list: BundleList, store: BundleStore, credentials: Credentials) -> Self {
        let remembered_path = store.root().join("references.json");
        let remembered = std::fs::read(&remembered_path)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default();
        Self {
            list,
            store,
            credentials,
            remembered: Mutex::new(remembered),
            remembered_path,
        }
    }

    pub fn list(&self) -> &BundleList {
        &self.list
    }

    /// Every entry as a file, in list order.
    pub async fn resolve(&self) -> Result<Vec<ResolvedBundle>, OciError> {
        let mut resolved = Vec::with_capacity(self.list.entries.len());
        for entry in &self.list.entries {
            resolved.push(match entry {
                BundleEntry::File(path) => ResolvedBundle {
                    path: path.clone(),
                    origin: None,
                },
                BundleEntry::Registry {
                    reference,
                    insecure,
                } => self.resolve_reference(reference, *insecure).await?,
            });
        }
        Ok(resolved)
    }

    /// The file of the bundle whose content has `digest`, from the store or
    /// else from the repositories the list names (a registry keeps every
    /// component it was given under its digest, also after its tag moved):
    /// `Ok(None)` when none has it, `Err` when one could not be asked.
    pub async fn fetch_digest(&self, digest: &str) -> Result<Option<PathBuf>, OciError> {
        let digest: Digest = digest.parse()?;
        if let Some(path) = self.store.get(&digest) {
            return Ok(Some(path));
        }
        let mut unanswered = None;
        for (reference, insecure) in self.repositories() {
            let registry = Registry::for_reference(reference, &self.credentials, insecure);
            match registry.fetch(reference, &digest).await {
                Ok(component) => return Ok(Some(self.store.put(&component).await?.1)),
                Err(OciError::NotFound { .. }) => {}
                Err(error) => unanswered = Some(error),
            }
        }
        match unanswered {
            Some(error) => Err(error),
            None => Ok(None),
        }
    }

    /// Each repository the list names once, with its `insecure` setting.
    fn repositories(&self) -> Vec<(&Reference, bool)> {
        let mut seen = std::collections::BTreeSet::new();
        self.list
            .entries
            .iter()
            .filter_map(|entry| match entry {
                BundleEntry::Registry {
                    reference,
                    insecure,
                } => seen
                    .insert((
                        reference.resolve_registry().to_owned(),
                        reference.repository().to_owned(),
                    ))
                    .then_some((reference, *insecure)),
                BundleEntry::File(_) => None,
            })
            .collect()
    }

    async fn resolve_reference(
        &self,
        reference: &Reference,
        insecure: bool,
    ) -> Result<ResolvedBundle, OciError> {
        let key = reference.whole();
        match self.pull(reference, insecure).await {
            Ok(resolved) => {
                self.remember(&key, resolved.origin.clone()).await;
                Ok(resolved)
            }
            Err(error) => {
                let remembered = self.remembered.lock().await.get(&key).cloned();
                let Some(origin) = remembered else {
                    return Err(error);
                };
                let component: Digest = origin.component.parse()?;
                let Some(path) = self.store.get(&component) else {
                    return Err(error);
                };
                tracing::warn!(reference = %key, %error, digest = %origin.component,
                    "cannot resolve the bundle reference; serving what it resolved to last");
                Ok(ResolvedBundle {
                    path,
                    origin: Some(origin),
                })
            }
        }
    }

    async fn pull(
        &self,
        reference: &Reference,
        insecure: bool,
    ) -> Result<ResolvedBundle, OciError> {
        let registry = Registry::for_reference(reference, &self.credentials, insecure);
        let (resolved, path) = registry.pull_into(reference, &self.store).await?;
        Ok(ResolvedBundle {
            path,
            origin: Some(Origin {
                reference: reference.whole(),
                manifest: resolved.manifest.to_string(),
                component: resolved.component.to_string(),
            }),
        })
    }

    /// Notes what `reference` resolved to, in memory and on disk (a failed
    /// write is logged: it costs only the fallback after a restart).
    async fn remember(&self, reference: &str, origin: Option<Origin>) {
        let Some(origin) = origin else { return };
        let mut remembered = self.remembered.lock().await;
        if remembered.get(reference) == Some(&origin) {
            return;
        }
        remembered.insert(reference.to_owned(), origin);
        let bytes = serde_json::to_vec_pretty(&*remembered).expect("origins serialise");
        if let Err(error) = self.store.write_file(&self.remembered_path, &bytes).await {
            tracing::warn!(%error, "cannot remember the bundle list's resolutions");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_names_registry_references_and_files() {
        let list = BundleList::parse(
            Path::new("conf/bundles.toml"),
            r#"
            [[bundles]]
            reference = "localhost:5000/nodes/orders:1.2.0"
            [[bundles]]
            reference = "registry.internal:5000/nodes/greeter:1"
            insecure = true
            [[bundles]]
            path = "local/audit.wasm"
            "#,
        )
        .unwrap();
        assert!(matches!(
            &list.entries()[0],
            BundleEntry::Registry { reference, insecure: false } if reference.repository() == "nodes/orders"
        ));
        assert!(matches!(
            &list.entries()[1],
            BundleEntry::Registry { insecure: true, .. }
        ));
        assert_eq!(
            list.entries()[2],
            BundleEntry::File(PathBuf::from("conf/local/audit.wasm"))
        );
    }

    #[test]
    fn a_bad_list_is_one_error_naming_the_file_and_the_entry() {
        let path = Path::new("bundles.toml");
        for (text, expected) in [
            ("", "lists no bundles"),
            ("[[bundles]]\n", "bundle 1: give `reference"),
            (
                "[[bundles]]\nreference = \"a:1\"\npath = \"b.wasm\"\n",
                "not both",
            ),
            (
                "[[bundles]]\nreference = \"UPPER/Case:1\"\n",
                "not an OCI reference",
            ),
            (
                "[[bundles]]\npath = \"b.wasm\"\ninsecure = true\n",
                "registries only",
            ),
            ("[[bundles]]\nref = \"a:1\"\n", "unknown field"),
            ("bundles = 3\n", "invalid type"),
        ] {
            let error = BundleList::parse(path, text).unwrap_err().to_string();
            assert!(
                error.contains("bundles.toml") && error.contains(expected),
                "{text:?}: {error}"
            );
        }
    }
}
