//! Loading one bundle: read the file, digest it, compile it (or load it from
//! the cache), check that it is a component implementing the
//! `flowcraft:node@0.1` bundle world, prepare its `InstancePre`, ask it to
//! `describe` itself, and validate what it says.
//!
//! `describe()` is bounded like a node call, with limits of its own: a time
//! limit ([`PluginConfig::describe_timeout`](crate::PluginConfig::describe_timeout)),
//! at most [`MAX_NODE_TYPES`] node types, descriptions of at most
//! [`MAX_DESCRIPTION_BYTES`] and [`MAX_DESCRIBE_BYTES`] in all. What it
//! returns is copied out of the guest's memory before it can be checked, so
//! that copy is bounded by the memory limit.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use flowcraft_core::builtin::is_builtin;
use flowcraft_core::context::{NodeContext, WriteLimits};
use serde::Serialize;
use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use crate::bindings::flowcraft::node::types::NodeInfo;
use crate::bindings::{
    BundlePre, CONTRACT_VERSION, GuestBundleInfo, HOST_INTERFACES, NODE_INTERFACE,
};
use crate::cache::CacheOutcome;
use crate::call::{new_store, trap_failure};
use crate::config::{Grants, MAX_DESCRIBE_BYTES, MAX_DESCRIPTION_BYTES, MAX_NODE_TYPES};
use crate::engine::Runtime;
use crate::error::{PluginError, chain};
use crate::guest_log::CallLog;
use crate::http::HttpAllowList;
use crate::sandbox::{CallLabels, CallState};

/// What a bundle is: for `plugins list`, `plugins check` and pinning.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BundleInfo {
    /// The bundle's name (blueprints bind to it in `metadata.plugins`).
    pub name: String,
    /// Its semantic version.
    pub version: String,
    /// `sha256:<hex>` of the `.wasm` file: what runs are pinned to.
    pub digest: String,
    /// The file it was loaded from.
    pub path: PathBuf,
    /// The node types it implements.
    pub nodes: Vec<NodeTypeInfo>,
    /// Names of the config values granted to it (the values are not shown).
    pub granted_config: Vec<String>,
    /// The hosts it may send HTTP requests to (its `http` grant, as configured).
    pub granted_http: Vec<String>,
    /// The interfaces the component imports (`wasi:io/streams@0.2.6`, …).
    pub imports: Vec<String>,
    /// The interfaces it exports.
    pub exports: Vec<String>,
}

/// One node type of a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeTypeInfo {
    /// The `uses` key.
    pub uses: String,
    pub description: String,
    /// JSON Schema of the node's `params`, if the bundle declares one.
    pub params_schema: Option<String>,
}

/// A loaded, validated bundle, ready to instantiate.
pub(crate) struct Bundle {
    pub info: BundleInfo,
    pub version: semver::Version,
    /// `name@version`, as error messages and logs name it.
    pub label: Arc<str>,
    pub pre: BundlePre<CallState>,
    pub grants: Arc<Grants>,
    /// The parsed `http` grant; `None` when the bundle has no outbound HTTP.
    pub http: Option<Arc<HttpAllowList>>,
    /// Whether the compiled code came from the on-disk cache.
    pub cache: CacheOutcome,
}

impl Bundle {
    /// Whether this bundle implements node type `uses`.
    pub fn implements(&self, uses: &str) -> bool {
        self.info.nodes.iter().any(|node| node.uses == uses)
    }
}

/// A bundle file read into memory.
pub(crate) struct WasmFile {
    pub path: PathBuf,
    pub bytes: Vec<u8>,
    /// Lower-case hex sha256 of `bytes`.
    pub digest_hex: String,
}

impl WasmFile {
    /// Reads and digests `path`. Blocking.
    pub fn read(path: &Path) -> Result<Self, PluginError> {
        let bytes = std::fs::read(path).map_err(|source| PluginError::Read {
            path: path.to_owned(),
            source,
        })?;
        let digest_hex = hex::encode(Sha256::digest(&bytes));
        Ok(Self {
            path: path.to_owned(),
            bytes,
            digest_hex,
        })
    }

    /// `sha256:<hex>`.
    pub fn digest(&self) -> String {
        format!("sha256:{}", self.digest_hex)
    }
}

/// Loads `file` into `runtime`; `grants` gives the grants of a bundle name.
pub(crate) async fn load(
    runtime: &Arc<Runtime>,
    file: WasmFile,
    grants: impl FnOnce(&str) -> Grants,
) -> Result<Bundle, PluginError> {
    check_header(&file.path, &file.bytes)?;
    let digest = file.digest();
    let path = file.path.clone();
    let (component, cache) = compile(runtime, file).await?;
    check_interface(&runtime.engine, &component, &path)?;
    let pre = runtime
        .linker
        .instantiate_pre(&component)
        .and_then(BundlePre::new)
        .map_err(|e| PluginError::WrongInterface {
            path: path.clone(),
            reason: chain(&e),
        })?;
    let described = describe(runtime, &pre, &path).await?;
    let info = validate(described, &path, digest)?;
    let version = semver::Version::parse(&info.version).expect("validated");
    let grants = grants(&info.name);
    let http = grants.http_allow_list(&info.name)?;
    let ty = component.component_type();
    let info = BundleInfo {
        granted_config: grants.config.keys().cloned().collect(),
        granted_http: grants.http.clone(),
        imports: ty
            .imports(&runtime.engine)
            .map(|(name, _)| name.to_owned())
            .collect(),
        exports: ty
            .exports(&runtime.engine)
            .map(|(name, _)| name.to_owned())
            .collect(),
        ..info
    };
    Ok(Bundle {
        label: format!("{}@{}", info.name, info.version).into(),
        info,
        version,
        pre,
        grants: Arc::new(grants),
        http: (!http.is_empty()).then(|| Arc::new(http)),
        cache,
    })
}

/// Rejects files that are not WebAssembly components before compiling them.
fn check_header(path: &Path, bytes: &[u8]) -> Result<(), PluginError> {
    let not_a_component = |reason: &str| PluginError::NotAComponent {
        path: path.to_owned(),
        reason: reason.to_owned(),
    };
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(not_a_component(
            "the file does not start with the WebAssembly header (\\0asm); is it a .wasm file?",
        ));
    }
    match bytes[4..8] {
        [0x0d, 0x00, 0x01, 0x00] => Ok(()),
        [0x01, 0x00, 0x00, 0x00] => Err(not_a_component(
            "it is a core WebAssembly module; build bundles for the wasm32-wasip2 target \
             (cargo build --target wasm32-wasip2), which produces components",
        )),
        _ => Err(not_a_component(
            "unknown WebAssembly binary version (a component for a different component-model revision?)",
        )),
    }
}

async fn compile(
    runtime: &Arc<Runtime>,
    file: WasmFile,
) -> Result<(Component, CacheOutcome), PluginError> {
    let runtime = Arc::clone(runtime);
    let path = file.path.clone();
    tokio::task::spawn_blocking(move || {
        runtime
            .cache
            .component(&runtime.engine, &file.bytes, &file.digest_hex)
    })
    .await
    .map_err(|e| PluginError::Compile {
        path: path.clone(),
        reason: format!("the compile task failed: {e}"),
    })?
    .map_err(|e| PluginError::Compile {
        path,
        reason: chain(&e),
    })
}

/// Checks the component's `flowcraft:node` exports and imports by name and
/// version, for messages clearer than a linker error.
fn check_interface(engine: &Engine, component: &Component, path: &Path) -> Result<(), PluginError> {
    let wrong = |reason: String| PluginError::WrongInterface {
        path: path.to_owned(),
        reason,
    };
    let ty = component.component_type();
    let exports: Vec<&str> = ty.exports(engine).map(|(name, _)| name).collect();
    let node_exports: Vec<&str> = exports
        .iter()
        .copied()
        .filter(|name| interface_of(name) == NODE_INTERFACE)
        .collect();
    match node_exports.as_slice() {
        [] => {
            let listed = if exports.is_empty() {
                "it exports nothing".to_owned()
            } else {
                format!("it exports {}", exports.join(", "))
            };
            return Err(wrong(format!(
                "it does not export the {NODE_INTERFACE} interface ({listed}); build it with the flowcraft SDK"
            )));
        }
        [name] => {
            check_version(name).map_err(|reason| wrong(format!("it exports {name}: {reason}")))?
        }
        _ => {
            return Err(wrong(format!(
                "it exports {} several times",
                NODE_INTERFACE
            )));
        }
    }
    for (name, _) in ty.imports(engine) {
        if !name.starts_with("flowcraft:") {
            continue;
        }
        if !HOST_INTERFACES.contains(&interface_of(name)) {
            return Err(wrong(format!(
                "it imports {name}, which this host does not provide (it provides {}, version {CONTRACT_VERSION})",
                HOST_INTERFACES.join(" and ")
            )));
        }
        check_version(name).map_err(|reason| wrong(format!("it imports {name}: {reason}")))?;
    }
    Ok(())
}

/// `flowcraft:node/node@0.1.0` → `flowcraft:node/node`.
fn interface_of(name: &str) -> &str {
    name.split_once('@')
        .map_or(name, |(interface, _)| interface)
}

/// Accepts interface versions semver-compatible with [`CONTRACT_VERSION`].
fn check_version(name: &str) -> Result<(), String> {
    let supported = semver::Version::parse(CONTRACT_VERSION).expect("valid contract version");
    let Some((_, version)) = name.split_once('@') else {
        return Err(format!(
            "the interface is unversioned; this host implements flowcraft:node@{CONTRACT_VERSION}"
        ));
    };
    let version = semver::Version::parse(version)
        .map_err(|e| format!("'{version}' is not a valid version ({e})"))?;
    let compatible = if supported.major == 0 {
        version.major == 0 && version.minor == supported.minor
    } else {
        version.major == supported.major
    };
    if compatible {
        return Ok(());
    }
    Err(format!(
        "it was built against flowcraft:node@{version}, but this host implements flowcraft:node@{CONTRACT_VERSION}; \
         rebuild it with a matching SDK or use a host that supports {version}"
    ))
}

/// Calls the bundle's `describe` in a sandboxed instance of its own.
async fn describe(
    runtime: &Runtime,
    pre: &BundlePre<CallState>,
    path: &Path,
) -> Result<GuestBundleInfo, PluginError> {
    // Declared first so that it is released after the store.
    let _slot = runtime
        .slots
        .acquire()
        .await
        .map_err(|_| PluginError::Describe {
            path: path.to_owned(),
            reason: "the plugin runtime is shutting down".into(),
        })?;
    let labels = CallLabels {
        bundle: path.display().to_string().into(),
        uses: "describe".into(),
        run_id: String::new(),
        node_id: String::new(),
    };
    let time_limit = runtime.limits.describe_timeout;
    let no_writes = WriteLimits {
        writes: 0,
        ..WriteLimits::default()
    };
    let state = CallState::new(
        NodeContext::with_limits(Default::default(), no_writes),
        Arc::new(Grants::default()),
        None,
        labels,
        CallLog::call_only(),
        runtime.limits.memory_limit,
        time_limit,
    );
    let mut store = new_store(runtime, state);
    let call = async {
        let instance = pre.instantiate_async(&mut store).await?;
        instance
            .flowcraft_node_node()
            .call_describe(&mut store)
            .await
    };
    let result = tokio::time::timeout(time_limit, call).await;
    match result {
        Ok(Ok(info)) => Ok(info),
        Ok(Err(error)) => Err(PluginError::Describe {
            path: path.to_owned(),
            reason: trap_failure(&error, store.data()).message,
        }),
        Err(_) => Err(PluginError::Describe {
            path: path.to_owned(),
            reason: format!("it did not return within {} ms", time_limit.as_millis()),
        }),
    }
}

/// Checks what a bundle says about itself.
fn validate(
    described: GuestBundleInfo,
    path: &Path,
    digest: String,
) -> Result<BundleInfo, PluginError> {
    let invalid = |reason: String| PluginError::InvalidBundle {
        path: path.to_owned(),
        reason,
    };
    check_describe_size(&described).map_err(invalid)?;
    let name = check_name_and_version(&described).map_err(invalid)?;
    check_node_types(name, &described.nodes).map_err(invalid)?;
    Ok(BundleInfo {
        name: name.to_owned(),
        version: described.version,
        digest,
        path: path.to_owned(),
        nodes: described
            .nodes
            .into_iter()
            .map(|node| NodeTypeInfo {
                uses: node.uses,
                description: node.description,
                params_schema: node.params_schema,
            })
            .collect(),
        granted_config: Vec::new(),
        granted_http: Vec::new(),
        imports: Vec::new(),
        exports: Vec::new(),
    })
}

/// The number of node types and the total bytes `describe()` returned are within limits.
fn check_describe_size(described: &GuestBundleInfo) -> Result<(), String> {
    let count = described.nodes.len();
    if count > MAX_NODE_TYPES {
        return Err(format!(
            "describe() lists {count} node types, more than the limit of {MAX_NODE_TYPES} per bundle"
        ));
    }
    let size = described.name.len()
        + described.version.len()
        + described
            .nodes
            .iter()
            .map(|node| {
                node.uses.len()
                    + node.description.len()
                    + node.params_schema.as_ref().map_or(0, String::len)
            })
            .sum::<usize>();
    if size > MAX_DESCRIBE_BYTES {
        return Err(format!(
            "describe() returned {size} bytes, more than the limit of {MAX_DESCRIBE_BYTES} bytes"
        ));
    }
    Ok(())
}

/// The bundle's trimmed name, once it and the version are checked to be usable.
fn check_name_and_version(described: &GuestBundleInfo) -> Result<&str, String> {
    let name = described.name.trim();
    if name.is_empty()
        || name
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '@')
    {
        return Err(format!(
            "bundle name {:?} is not usable: it must be non-empty, without spaces, control characters or '@'",
            described.name
        ));
    }
    semver::Version::parse(&described.version).map_err(|e| {
        format!(
            "bundle {name}: version '{}' is not a semantic version such as 1.2.0 ({e})",
            described.version
        )
    })?;
    Ok(name)
}

/// The node types: at least one, with usable, unique, non-built-in keys and bounded descriptions.
fn check_node_types(name: &str, nodes: &[NodeInfo]) -> Result<(), String> {
    if nodes.is_empty() {
        return Err(format!("bundle {name} declares no node types"));
    }
    let mut seen = BTreeSet::new();
    for node in nodes {
        if node.uses.trim().is_empty() {
            return Err(format!(
                "bundle {name} declares a node type with an empty `uses` key"
            ));
        }
        if node.uses.chars().any(char::is_control) {
            return Err(format!(
                "bundle {name} declares node type {:?}, whose `uses` key has control characters",
                node.uses
            ));
        }
        if node.description.len() > MAX_DESCRIPTION_BYTES {
            return Err(format!(
                "bundle {name}, node type '{}': the description is {} bytes, more than the limit of \
                 {MAX_DESCRIPTION_BYTES} bytes",
                node.uses,
                node.description.len()
            ));
        }
        if is_builtin(&node.uses) {
            return Err(format!(
                "bundle {name} declares node type '{}', which is built into the engine; choose another `uses` key",
                node.uses
            ));
        }
        if !seen.insert(node.uses.as_str()) {
            return Err(format!(
                "bundle {name} declares node type '{}' more than once",
                node.uses
            ));
        }
        if let Some(schema) = &node.params_schema {
            serde_json::from_str::<serde_json::Value>(schema).map_err(|e| {
                format!(
                    "bundle {name}, node type '{}': params-schema is not valid JSON ({e})",
                    node.uses
                )
            })?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_tell_components_from_modules() {
        let path = Path::new("x.wasm");
        assert!(check_header(path, b"\0asm\x0d\0\x01\0").is_ok());
        let module = check_header(path, b"\0asm\x01\0\0\0")
            .unwrap_err()
            .to_string();
        assert!(module.contains("core WebAssembly module"), "{module}");
        let text = check_header(path, b"hello world").unwrap_err().to_string();
        assert!(text.contains("WebAssembly header"), "{text}");
    }

    fn described(nodes: usize, description: &str) -> GuestBundleInfo {
        GuestBundleInfo {
            name: "big".into(),
            version: "1.0.0".into(),
            nodes: (0..nodes)
                .map(|n| NodeInfo {
                    uses: format!("n{n}"),
                    description: description.into(),
                    params_schema: None,
                })
                .collect(),
        }
    }

    fn refusal(info: GuestBundleInfo) -> String {
        validate(info, Path::new("big.wasm"), "sha256:00".into())
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn describe_is_bounded_in_node_types_and_bytes() {
        assert!(
            validate(
                described(MAX_NODE_TYPES, "x"),
                Path::new("big.wasm"),
                "d".into()
            )
            .is_ok()
        );
        assert_eq!(
            refusal(described(MAX_NODE_TYPES + 1, "x")),
            "bundle big.wasm: describe() lists 1001 node types, more than the limit of 1000 per bundle"
        );
        let long = "x".repeat(MAX_DESCRIPTION_BYTES + 1);
        assert_eq!(
            refusal(described(1, &long)),
            "bundle big.wasm: bundle big, node type 'n0': the description is 4097 bytes, more than \
             the limit of 4096 bytes"
        );
        let total = refusal(described(300, &"x".repeat(MAX_DESCRIPTION_BYTES)));
        assert!(
            total.starts_with("bundle big.wasm: describe() returned 122")
                && total.ends_with("bytes, more than the limit of 1048576 bytes"),
            "{total}"
        );
    }

    #[test]
    fn names_and_keys_with_control_characters_are_refused() {
        let mut info = described(1, "x");
        info.name = "evil\u{1b}[2J".into();
        assert!(refusal(info).contains("control characters"));
        let mut info = described(1, "x");
        info.nodes[0].uses = "a\nb".into();
        assert!(refusal(info).contains("control characters"));
    }

    #[test]
    fn interface_versions_follow_semver() {
        assert!(check_version("flowcraft:node/node@0.1.0").is_ok());
        assert!(check_version("flowcraft:node/node@0.1.7").is_ok());
        let newer = check_version("flowcraft:node/node@0.2.0").unwrap_err();
        assert!(
            newer.contains("0.2.0") && newer.contains("0.1.0"),
            "{newer}"
        );
        assert!(check_version("flowcraft:node/node@1.0.0").is_err());
    }
}
