//! Running against the local Azure stand-ins: settings from the environment
//! (`eval "$(scripts/azure-local.sh env)"`) with a queue and database of the
//! test's own, and `flowcraft-host` worker processes.

use std::process::{Child, Command, Stdio};

use flowcraft_azure::backend::AzureConfig;

/// The local services' settings, with a queue and database of this test's own.
pub fn azure_config(tag: &str) -> AzureConfig {
    let variable = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| {
            panic!("{name} is not set: start the local services: scripts/azure-local.sh start; eval \"$(scripts/azure-local.sh env)\"")
        })
    };
    AzureConfig {
        storage_connection_string: variable("AZURE_STORAGE_CONNECTION_STRING"),
        cosmos_connection_string: variable("COSMOS_DB_CONNECTION_STRING"),
        redis_url: variable("REDIS_URL"),
        queue: format!("{tag}-{}", std::process::id()),
        database: format!("flowcraft-{tag}-{}", std::process::id()),
        context_container: "workflow-contexts".into(),
        status_container: "workflow-statuses".into(),
        create_resources: true,
    }
}

/// Worker processes, killed when dropped.
pub struct Workers(std::sync::Mutex<Vec<Child>>);

impl Workers {
    /// Panics if a worker has exited (its stderr is in the test output).
    pub fn assert_running(&self) {
        for child in self.0.lock().unwrap().iter_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("a worker exited with {status}");
            }
        }
    }

    pub fn spawn(count: usize, config: &AzureConfig, blueprints: &std::path::Path) -> Self {
        let children = (0..count)
            .map(|_| {
                Command::new(env!("CARGO_BIN_EXE_flowcraft-host"))
                    .args(["--plugins", super::dist().to_str().unwrap()])
                    .args(["--blueprints", blueprints.to_str().unwrap()])
                    .args(["--create-resources", "--concurrency", "8"])
                    .env("FLOWCRAFT_QUEUE", &config.queue)
                    .env("FLOWCRAFT_DATABASE", &config.database)
                    .env("FLOWCRAFT_LOG", "warn")
                    .stdout(Stdio::null())
                    .spawn()
                    .expect("a worker starts")
            })
            .collect();
        Self(std::sync::Mutex::new(children))
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for child in self.0.get_mut().unwrap().iter_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
