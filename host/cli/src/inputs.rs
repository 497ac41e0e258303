//! Reading what users hand the CLI: blueprint files and directories, JSON
//! arguments (inline or `@file`). Every failure names the file or flag.

use std::path::Path;

use anyhow::{Context, Result, bail};
use flowcraft_core::blueprint::Blueprint;
use flowcraft_core::context::{ContextMap, context_from_object};
use serde_json::Value;

/// Reads one blueprint file.
pub fn read_blueprint(path: &Path) -> Result<Blueprint> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read blueprint file {}", path.display()))?;
    Blueprint::from_json(&text).with_context(|| {
        format!(
            "{} is not a Flowcraft blueprint (expected JSON {{\"id\", \"nodes\", \"edges\"}})",
            path.display()
        )
    })
}

/// Reads every `*.json` blueprint in `dir` (sorted by file name).
pub fn read_blueprint_dir(dir: &Path) -> Result<Vec<Blueprint>> {
    let entries = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read blueprint directory {}", dir.display()))?;
    let mut paths: Vec<_> = entries
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .filter(|path| !path.to_string_lossy().ends_with(".context.json"))
        .collect();
    paths.sort();
    paths.iter().map(|path| read_blueprint(path)).collect()
}

/// Parses a JSON argument given inline or as `@path`.
pub fn json_argument(flag: &str, text: &str) -> Result<Value> {
    let (source, body) = match text.strip_prefix('@') {
        Some(path) => (
            format!("file {path}"),
            std::fs::read_to_string(path).with_context(|| format!("{flag}: cannot read {path}"))?,
        ),
        None => ("argument".to_owned(), text.to_owned()),
    };
    serde_json::from_str(&body).with_context(|| {
        let hint = if source == "argument" && Path::new(text).is_file() {
            format!("; {text} is a file: use @{text}")
        } else if source == "argument" {
            format!("; to pass a string, quote it: '\"{text}\"'")
        } else {
            String::new()
        };
        format!("{flag}: the {source} is not valid JSON{hint}")
    })
}

/// Parses `--context`: a JSON object.
pub fn context_argument(text: Option<&str>) -> Result<ContextMap> {
    let Some(text) = text else {
        return Ok(ContextMap::new());
    };
    match json_argument("--context", text)? {
        Value::Object(map) => Ok(context_from_object(map)),
        other => bail!(
            "--context must be a JSON object of initial context keys, got {}",
            kind(&other)
        ),
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
