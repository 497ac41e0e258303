//! What the benchmarks share: the local services' settings and the example
//! bundles.

#![allow(dead_code)] // each benchmark uses the part it needs

use std::path::{Path, PathBuf};

use flowcraft_azure::backend::AzureConfig;

/// The local services' settings from the environment, on a queue and a
/// database of their own named after `bench` and this process; exits with
/// the instruction when the services' variables are not set.
pub fn local_config(bench: &str) -> AzureConfig {
    let tag = format!("{bench}-{}", std::process::id());
    AzureConfig::from_environment(&tag, &format!("flowcraft-{tag}")).unwrap_or_else(|problem| {
        eprintln!("{problem}");
        std::process::exit(1);
    })
}

/// The example and test bundles (`scripts/build-plugins.sh`).
pub fn dist() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../plugins-example/dist")
}
