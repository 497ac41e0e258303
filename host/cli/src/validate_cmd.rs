//! `flowcraft-host validate`: every problem of every blueprint file, one line each.

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;
use flowcraft_core::blueprint::Blueprint;
use flowcraft_core::expression::EvaluatorMode;
use flowcraft_core::runner::NodeRunner;
use flowcraft_core::validate::{Catalog, subflow_cycles, validate as validate_blueprint};
use flowcraft_plugins::{PluginConfig, PluginHost};

use crate::inputs::{read_blueprint, read_blueprint_dir};

#[derive(Args)]
pub struct ValidateArgs {
    /// Blueprint files to check.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Check `uses` keys against the bundles in DIR (without it, only built-ins
    /// are known and plugin node types are not checked).
    #[arg(long, value_name = "DIR", env = "FLOWCRAFT_PLUGINS")]
    plugins: Option<PathBuf>,
    /// Check `subflow` references against the blueprints in DIR (and the
    /// files given): an unknown blueprint id is an error, a cycle of
    /// subflows a warning.
    #[arg(long, value_name = "DIR")]
    blueprints: Option<PathBuf>,
}

pub async fn validate(args: ValidateArgs) -> Result<ExitCode> {
    let host = match &args.plugins {
        Some(dir) => Some(PluginHost::load(PluginConfig::new(dir)).await?),
        None => None,
    };
    if host.is_none() {
        eprintln!(
            "note: node types were not checked: give the bundles with --plugins DIR (or FLOWCRAFT_PLUGINS)"
        );
    }
    let implements = |uses: &str| host.as_ref().is_none_or(|h| h.implements(uses));
    let read: Vec<(&PathBuf, Result<Blueprint>)> = args
        .files
        .iter()
        .map(|path| (path, read_blueprint(path)))
        .collect();
    let mut known: Vec<Blueprint> = match &args.blueprints {
        Some(dir) => read_blueprint_dir(dir)?,
        None => Vec::new(),
    };
    known.extend(
        read.iter()
            .filter_map(|(_, blueprint)| blueprint.as_ref().ok().cloned()),
    );
    let ids: HashSet<&str> = known.iter().map(|b| b.id.as_str()).collect();
    let knows = |id: &str| ids.contains(id);
    let catalog = Catalog {
        implements: &implements,
        knows_blueprint: args
            .blueprints
            .as_ref()
            .map(|_| &knows as &dyn Fn(&str) -> bool),
        evaluator: EvaluatorMode::Safe,
    };
    let mut invalid = 0;
    for (path, blueprint) in &read {
        let problems = match blueprint {
            Ok(blueprint) => problems_of(blueprint, &catalog, host.as_ref()),
            Err(error) => {
                // The message names the file itself.
                invalid += 1;
                println!("{}", crate::error_line(error));
                continue;
            }
        };
        match (problems.is_empty(), blueprint) {
            (true, Ok(blueprint)) => {
                println!("{}: ok{}", path.display(), expected_actions(blueprint))
            }
            _ => {
                invalid += 1;
                for problem in problems {
                    println!("{}: {problem}", path.display());
                }
            }
        }
    }
    if args.blueprints.is_some() {
        for cycle in subflow_cycles(&known) {
            println!("warning: {cycle}");
        }
    }
    Ok(if invalid == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(crate::EXIT_INVALID)
    })
}

/// Every problem of `blueprint`: its validation, and once that passes and
/// bundles are given, its `metadata.plugins` bindings (as `run` pins them).
fn problems_of(
    blueprint: &Blueprint,
    catalog: &Catalog<'_>,
    host: Option<&PluginHost>,
) -> Vec<String> {
    let mut problems: Vec<String> = validate_blueprint(blueprint, catalog)
        .iter()
        .map(ToString::to_string)
        .collect();
    if let (true, Some(host)) = (problems.is_empty(), host)
        && let Err(error) = host.pin(blueprint)
    {
        problems.push(format!("metadata.plugins: {error}"));
    }
    problems
}

/// `; actions: A → x, y; B → z`: the actions each node's out-edges expect,
/// so that a typo in an edge's `action` shows next to the node's real ones.
fn expected_actions(blueprint: &Blueprint) -> String {
    let mut by_node: Vec<(&str, Vec<&str>)> = Vec::new();
    for edge in &blueprint.edges {
        let Some(action) = edge.action.as_deref().filter(|a| !a.is_empty()) else {
            continue;
        };
        match by_node.iter_mut().find(|(node, _)| *node == edge.source) {
            Some((_, actions)) if actions.contains(&action) => {}
            Some((_, actions)) => actions.push(action),
            None => by_node.push((&edge.source, vec![action])),
        }
    }
    if by_node.is_empty() {
        return String::new();
    }
    let listed: Vec<String> = by_node
        .iter()
        .map(|(node, actions)| format!("{node} → {}", actions.join(", ")))
        .collect();
    format!("; actions: {}", listed.join("; "))
}
