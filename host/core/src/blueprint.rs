//! The blueprint model: Flowcraft's workflow JSON, accepted exactly.
//!
//! A blueprint is `{id, nodes, edges, metadata}`. Every struct keeps the fields
//! it does not know in `extra`, so a blueprint read and written back loses
//! nothing. Values the engine interprets loosely (numbers in `config`, the
//! `joinStrategy` string) stay loosely typed here; [`crate::validate`] reports
//! what is wrong with them, one message per problem.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

/// A Flowcraft workflow blueprint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Blueprint {
    /// The id workers look the blueprint up by (`blueprintId` in jobs).
    pub id: String,
    /// The steps. Flowcraft also accepts an object map here; its values are taken.
    #[serde(deserialize_with = "nodes_from_list_or_map")]
    pub nodes: Vec<NodeDefinition>,
    /// Directed connections between nodes.
    #[serde(default)]
    pub edges: Vec<EdgeDefinition>,
    /// Free-form metadata; `version`, `cycleEntryPoints` and `plugins` mean something.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Map<String, Value>>,
    /// Fields this model does not interpret, kept as they were.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One node of a blueprint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeDefinition {
    pub id: String,
    /// The implementation key: a built-in (`wait`, `sleep`, ...) or a plugin node type.
    pub uses: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inputs: Option<NodeInputs>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<NodeConfig>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// How a node's input is built (upstream §2.3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum NodeInputs {
    /// One reference: `"A"`, `"A.path.to"`, `"_outputs.A"`, `"contextKey"`.
    Single(String),
    /// An object whose every value is a reference.
    Map(BTreeMap<String, String>),
}

/// Per-node execution settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeConfig {
    /// Total number of attempts (values below 1 mean 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<serde_json::Number>,
    /// Delay before the second attempt in ms; doubles for each further attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_delay: Option<serde_json::Number>,
    /// Per-attempt time limit in ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<serde_json::Number>,
    /// Id of the node that runs when this one finally fails with a non-fatal error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<String>,
    /// `"all"` (default) or `"any"`; anything else is a validation error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join_strategy: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A directed edge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EdgeDefinition {
    pub source: String,
    pub target: String,
    /// An action edge is taken only when the source's result carries this action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// Expression; the edge is taken only when it is truthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
    /// Expression computing the target's input from `input` and `context`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transform: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// How a join node waits for its predecessors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinStrategy {
    /// Every predecessor must have finished (a skipped one skips the join).
    All,
    /// The first arriving predecessor starts the node, once.
    Any,
}

/// A blueprint's request to run some node types from a specific bundle,
/// declared in `metadata.plugins`:
///
/// ```json
/// "metadata": { "plugins": {
///     "orders": "1.2.0",
///     "pricing": { "version": "2.0.1" },
///     "legacy": { "digest": "sha256:0f3a..." }
/// } }
/// ```
///
/// Every node type the named bundle implements is then taken from that bundle
/// (and that version or content digest) for runs of this blueprint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BundleRequirement {
    pub version: Option<String>,
    pub digest: Option<String>,
}

/// `metadata.plugins`, parsed: bundle name → requirement.
pub type PluginBindings = BTreeMap<String, BundleRequirement>;

impl Blueprint {
    /// Parses a blueprint from JSON text.
    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// The node with this id, if any (the first one, should ids repeat).
    pub fn node(&self, id: &str) -> Option<&NodeDefinition> {
        self.nodes.iter().find(|node| node.id == id)
    }

    /// `metadata.version` when it is a non-empty string, as upstream compares it.
    pub fn version(&self) -> Option<&str> {
        match self.metadata.as_ref()?.get("version")? {
            Value::String(version) if !version.is_empty() => Some(version),
            _ => None,
        }
    }

    /// `metadata.version` as stored in a run's `blueprintVersion`: the
    /// version value when truthy, else `null` (upstream `metadata.version || null`).
    pub fn version_value(&self) -> Value {
        match self.metadata.as_ref().and_then(|m| m.get("version")) {
            Some(value) if crate::expression::is_truthy(value) => value.clone(),
            _ => Value::Null,
        }
    }

    /// `metadata.stepLimit`: node executions allowed per run of this
    /// blueprint, overriding the engine's default.
    pub fn step_limit(&self) -> Option<u64> {
        self.metadata.as_ref()?.get("stepLimit")?.as_u64()
    }

    /// How deeply runs of this blueprint may nest subflows:
    /// `metadata.maxSubflowDepth`, else the default.
    pub fn subflow_depth(&self) -> Result<u32, crate::limits::LimitError> {
        match self
            .metadata
            .as_ref()
            .and_then(|m| m.get("maxSubflowDepth"))
        {
            None => Ok(crate::limits::DEFAULT_SUBFLOW_DEPTH),
            Some(value) => crate::limits::subflow_depth(value),
        }
    }

    /// How many child runs a run of this blueprint may add to its run
    /// tree: `metadata.maxSubflowRuns`, else the default.
    pub fn subflow_runs(&self) -> Result<u32, crate::limits::LimitError> {
        match self.metadata.as_ref().and_then(|m| m.get("maxSubflowRuns")) {
            None => Ok(crate::limits::DEFAULT_SUBFLOW_RUNS),
            Some(value) => crate::limits::subflow_runs(value),
        }
    }

    /// `metadata.cycleEntryPoints`, the preferred entries of start-less cycles.
    pub fn cycle_entry_points(&self) -> Vec<&str> {
        self.metadata
            .as_ref()
            .and_then(|m| m.get("cycleEntryPoints"))
            .and_then(Value::as_array)
            .map(|ids| ids.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default()
    }

    /// `metadata.plugins`, parsed. Malformed entries are reported by the validator.
    pub fn plugin_bindings(&self) -> Result<PluginBindings, String> {
        let Some(value) = self.metadata.as_ref().and_then(|m| m.get("plugins")) else {
            return Ok(PluginBindings::new());
        };
        let Value::Object(entries) = value else {
            return Err("metadata.plugins must be an object mapping bundle names to a version, a digest or {\"version\", \"digest\"}".into());
        };
        let mut bindings = PluginBindings::new();
        for (bundle, spec) in entries {
            let requirement = match spec {
                Value::String(text) if text.starts_with("sha256:") => BundleRequirement {
                    version: None,
                    digest: Some(text.clone()),
                },
                Value::String(text) => BundleRequirement {
                    version: Some(text.clone()),
                    digest: None,
                },
                Value::Object(fields) => {
                    let field = |name: &str| -> Result<Option<String>, String> {
                        match fields.get(name) {
                            None | Some(Value::Null) => Ok(None),
                            Some(Value::String(text)) => Ok(Some(text.clone())),
                            Some(_) => {
                                Err(format!("metadata.plugins.{bundle}.{name} must be a string"))
                            }
                        }
                    };
                    BundleRequirement {
                        version: field("version")?,
                        digest: field("digest")?,
                    }
                }
                _ => {
                    return Err(format!(
                        "metadata.plugins.{bundle} must be a version string, a \"sha256:...\" digest or an object"
                    ));
                }
            };
            bindings.insert(bundle.clone(), requirement);
        }
        Ok(bindings)
    }
}

impl NodeDefinition {
    /// The node's config, or the defaults.
    pub fn config(&self) -> NodeConfig {
        self.config.clone().unwrap_or_default()
    }

    /// The join strategy; unknown strings (rejected by validation) read as `all`.
    pub fn join_strategy(&self) -> JoinStrategy {
        match self
            .config
            .as_ref()
            .and_then(|c| c.join_strategy.as_deref())
        {
            Some("any") => JoinStrategy::Any,
            _ => JoinStrategy::All,
        }
    }

    /// `params`, or an empty object.
    pub fn params_or_empty(&self) -> Value {
        self.params
            .clone()
            .unwrap_or_else(|| Value::Object(Map::new()))
    }

    /// The fallback node id, when one is configured.
    pub fn fallback(&self) -> Option<&str> {
        self.config.as_ref()?.fallback.as_deref()
    }
}

fn nodes_from_list_or_map<'de, D>(deserializer: D) -> Result<Vec<NodeDefinition>, D::Error>
where
    D: Deserializer<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ListOrMap {
        List(Vec<NodeDefinition>),
        Map(indexmap::IndexMap<String, NodeDefinition>),
    }
    Ok(match ListOrMap::deserialize(deserializer)? {
        ListOrMap::List(nodes) => nodes,
        ListOrMap::Map(nodes) => nodes.into_values().collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_survive_a_round_trip() {
        let text = r#"{"id":"b","nodes":[{"id":"A","uses":"const","color":"red","config":{"maxRetries":2,"owner":"x"}}],
            "edges":[{"source":"A","target":"A","weight":3}],"metadata":{"version":"1"},"author":"me"}"#;
        let blueprint = Blueprint::from_json(text).unwrap();
        let back = serde_json::to_value(&blueprint).unwrap();
        let original: Value = serde_json::from_str(text).unwrap();
        assert_eq!(back, original);
    }

    #[test]
    fn nodes_may_be_an_object_map() {
        let blueprint =
            Blueprint::from_json(r#"{"id":"b","nodes":{"x":{"id":"A","uses":"u"}},"edges":[]}"#)
                .unwrap();
        assert_eq!(blueprint.nodes[0].id, "A");
    }

    #[test]
    fn plugin_bindings_accept_versions_digests_and_objects() {
        let blueprint = Blueprint::from_json(
            r#"{"id":"b","nodes":[],"metadata":{"plugins":{"a":"1.0.0","b":"sha256:ab","c":{"version":"2"}}}}"#,
        )
        .unwrap();
        let bindings = blueprint.plugin_bindings().unwrap();
        assert_eq!(bindings["a"].version.as_deref(), Some("1.0.0"));
        assert_eq!(bindings["b"].digest.as_deref(), Some("sha256:ab"));
        assert_eq!(bindings["c"].version.as_deref(), Some("2"));
    }

    #[test]
    fn malformed_plugin_bindings_are_reported() {
        let blueprint =
            Blueprint::from_json(r#"{"id":"b","nodes":[],"metadata":{"plugins":{"a":5}}}"#)
                .unwrap();
        assert!(
            blueprint
                .plugin_bindings()
                .unwrap_err()
                .contains("metadata.plugins.a")
        );
    }
}
