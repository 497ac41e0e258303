//! `flowcraft-host graph`: a blueprint as a Mermaid flowchart, optionally
//! coloured by the node states of a saved run.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;
use flowcraft_core::mermaid::mermaid;

use crate::embedded::SavedRun;
use crate::inputs::read_blueprint;

#[derive(Args)]
pub struct GraphArgs {
    /// The blueprint file.
    blueprint: PathBuf,
    /// A state file from `run --state`; colours nodes by their state.
    #[arg(long, value_name = "FILE")]
    state: Option<PathBuf>,
}

pub fn graph(args: GraphArgs) -> Result<ExitCode> {
    let blueprint = read_blueprint(&args.blueprint)?;
    let progress = match &args.state {
        Some(path) => {
            let saved = SavedRun::load(path)?;
            saved.store.progress.get(&saved.run_id).cloned()
        }
        None => None,
    };
    print!("{}", mermaid(&blueprint, progress.as_ref()));
    Ok(ExitCode::SUCCESS)
}
