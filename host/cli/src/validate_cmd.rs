//! `flowcraft-host validate`: every problem of every blueprint file, one line each.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;
use flowcraft_core::expression::EvaluatorMode;
use flowcraft_core::runner::NodeRunner;
use flowcraft_core::validate::{Catalog, validate as validate_blueprint};
use flowcraft_plugins::{PluginConfig, PluginHost};

use crate::inputs::read_blueprint;

#[derive(Args)]
pub struct ValidateArgs {
    /// Blueprint files to check.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Check `uses` keys against the bundles in DIR (without it, only built-ins
    /// are known and plugin node types are not checked).
    #[arg(long, value_name = "DIR")]
    plugins: Option<PathBuf>,
}

pub async fn validate(args: ValidateArgs) -> Result<ExitCode> {
    let host = match &args.plugins {
        Some(dir) => Some(PluginHost::load(PluginConfig::new(dir)).await?),
        None => None,
    };
    let implements = |uses: &str| host.as_ref().is_none_or(|h| h.implements(uses));
    let catalog = Catalog {
        implements: &implements,
        knows_blueprint: None,
        evaluator: EvaluatorMode::Safe,
    };
    let mut invalid = 0;
    for path in &args.files {
        let problems = match read_blueprint(path) {
            Ok(blueprint) => validate_blueprint(&blueprint, &catalog)
                .iter()
                .map(ToString::to_string)
                .collect(),
            Err(error) => vec![format!("{error:#}")],
        };
        if problems.is_empty() {
            println!("{}: ok", path.display());
        } else {
            invalid += 1;
            for problem in problems {
                println!("{}: {problem}", path.display());
            }
        }
    }
    Ok(if invalid == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(crate::EXIT_INVALID)
    })
}
