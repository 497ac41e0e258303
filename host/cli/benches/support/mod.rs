//! What the benchmarks share: the local services' settings and the example
//! bundles.

#![allow(dead_code)] // each benchmark uses the part it needs

use std::path::{Path, PathBuf};

use flowcraft_azure::backend::{AccountSetting, AzureConfig};

/// The local services' settings from the environment, on a queue and a
/// database of their own named after `bench` and this process; exits with
/// the instruction when the services' variables are not set.
pub fn local_config(bench: &str) -> AzureConfig {
    let variable = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| {
            eprintln!(
                "{name} is not set: start the local services first: scripts/azure-local.sh start; eval \"$(scripts/azure-local.sh env)\""
            );
            std::process::exit(1);
        })
    };
    let tag = format!("{bench}-{}", std::process::id());
    AzureConfig {
        storage: AccountSetting::ConnectionString(variable("AZURE_STORAGE_CONNECTION_STRING")),
        cosmos: AccountSetting::ConnectionString(variable("COSMOS_DB_CONNECTION_STRING")),
        credential: None,
        redis_url: variable("REDIS_URL"),
        queue: tag.clone(),
        database: format!("flowcraft-{tag}"),
        context_container: "workflow-contexts".into(),
        status_container: "workflow-statuses".into(),
        create_resources: true,
    }
}

/// The example and test bundles (`scripts/build-plugins.sh`).
pub fn dist() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../plugins-example/dist")
}
