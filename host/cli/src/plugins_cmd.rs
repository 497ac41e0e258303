//! `flowcraft-host plugins list|check`: what bundles are loaded, and whether a
//! file is a valid bundle.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Subcommand;
use flowcraft_plugins::{BundleInfo, check_bundle};

use crate::PluginArgs;

#[derive(Subcommand)]
pub enum PluginsCommand {
    /// Print each bundle of --plugins DIR: name, version, digest, node types, grants.
    List {
        #[command(flatten)]
        plugins: PluginArgs,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Check that FILE is a loadable bundle (a component exporting flowcraft:node).
    Check {
        /// The .wasm file.
        file: PathBuf,
    },
}

pub async fn plugins(command: PluginsCommand) -> Result<ExitCode> {
    match command {
        PluginsCommand::List { plugins, json } => {
            let host = crate::setup::load_plugins(
                plugins.dir()?,
                plugins.cache_dir.clone(),
                Default::default(),
                None,
            )
            .await?;
            let bundles = host.bundles();
            if json {
                println!("{}", serde_json::to_string_pretty(&bundles)?);
            } else {
                for bundle in &bundles {
                    print_bundle(bundle);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        PluginsCommand::Check { file } => {
            let info = check_bundle(&file)
                .await
                .with_context(|| format!("{} is not a valid bundle", file.display()))?;
            println!("{}: ok", file.display());
            print_bundle(&info);
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn print_bundle(bundle: &BundleInfo) {
    println!(
        "{}@{}  {}  {}",
        bundle.name,
        bundle.version,
        bundle.digest,
        bundle.path.display()
    );
    for node in &bundle.nodes {
        println!("    {:<20} {}", node.uses, node.description);
    }
    let mut grants = Vec::new();
    if !bundle.granted_config.is_empty() {
        grants.push(format!("config {}", bundle.granted_config.join(", ")));
    }
    if !bundle.granted_http.is_empty() {
        grants.push(format!("http {}", bundle.granted_http.join(", ")));
    }
    if grants.is_empty() {
        println!("    grants: none");
    } else {
        println!("    grants: {}", grants.join("; "));
    }
}
