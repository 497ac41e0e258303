//! `plugins push` and `plugins pull` against a real registry
//! (`docker-registry`), with the example bundle.

#[allow(dead_code)] // the registry's storage is for the crate's own tests
#[path = "../../oci/tests/support/mod.rs"]
mod registry;
mod support;

use std::process::{Command, Output};

use registry::{LocalRegistry, PASSWORD, USERNAME};

fn flowcraft(args: &[&str], docker_config: &std::path::Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flowcraft-host"))
        .args(args)
        .env("FLOWCRAFT_LOG", "warn")
        .env("DOCKER_CONFIG", docker_config)
        .env_remove("FLOWCRAFT_REGISTRY_USERNAME")
        .env_remove("FLOWCRAFT_REGISTRY_PASSWORD")
        .output()
        .expect("the binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).trim().to_owned()
}

#[test]
fn a_pushed_bundle_is_pulled_into_the_cache_by_tag_and_by_digest() {
    let local = LocalRegistry::anonymous();
    let dir = tempfile::tempdir().unwrap();
    let bundle = support::dist().join("orders.wasm");
    let tagged = format!("{}/nodes/orders:1.0.0", local.host());
    let pushed = flowcraft(
        &["plugins", "push", bundle.to_str().unwrap(), &tagged],
        dir.path(),
    );
    assert!(pushed.status.success(), "{}", text(&pushed.stderr));
    let manifest = text(&pushed.stdout);
    assert!(
        manifest.starts_with("sha256:") && manifest.len() == 71,
        "{manifest}"
    );
    assert!(
        text(&pushed.stderr).contains("pushed orders@"),
        "{}",
        text(&pushed.stderr)
    );

    let cache = dir.path().join("cache");
    let by_digest = format!("{}/nodes/orders@{manifest}", local.host());
    for reference in [&tagged, &by_digest] {
        let pulled = flowcraft(
            &[
                "plugins",
                "pull",
                reference,
                "--cache-dir",
                cache.to_str().unwrap(),
            ],
            dir.path(),
        );
        assert!(pulled.status.success(), "{}", text(&pulled.stderr));
        let stdout = text(&pulled.stdout);
        let (digest, path) = stdout.split_once("  ").expect("digest and path");
        assert!(path.starts_with(cache.to_str().unwrap()), "{path}");
        let original = std::fs::read(&bundle).unwrap();
        assert_eq!(std::fs::read(path).unwrap(), original);
        assert_eq!(digest, flowcraft_oci::Digest::of(&original).to_string());
    }
}

#[test]
fn push_refuses_a_file_that_is_no_bundle_and_pull_names_a_missing_tag() {
    let local = LocalRegistry::anonymous();
    let dir = tempfile::tempdir().unwrap();
    let not_a_bundle = dir.path().join("notes.wasm");
    std::fs::write(&not_a_bundle, "not wasm").unwrap();
    let tagged = format!("{}/nodes/notes:1", local.host());
    let pushed = flowcraft(
        &["plugins", "push", not_a_bundle.to_str().unwrap(), &tagged],
        dir.path(),
    );
    assert!(!pushed.status.success());
    assert!(
        text(&pushed.stderr).contains("is not a valid bundle"),
        "{}",
        text(&pushed.stderr)
    );

    let pulled = flowcraft(
        &[
            "plugins",
            "pull",
            &tagged,
            "--cache-dir",
            dir.path().to_str().unwrap(),
        ],
        dir.path(),
    );
    assert!(!pulled.status.success());
    assert!(
        text(&pulled.stderr).contains("not found"),
        "{}",
        text(&pulled.stderr)
    );
}

#[test]
fn a_registry_with_logins_takes_the_login_from_the_environment() {
    let local = LocalRegistry::with_logins();
    let dir = tempfile::tempdir().unwrap();
    let bundle = support::dist().join("orders.wasm");
    let tagged = format!("{}/nodes/orders:1.0.0", local.host());
    let args = ["plugins", "push", bundle.to_str().unwrap(), tagged.as_str()];
    let refused = flowcraft(&args, dir.path());
    assert!(!refused.status.success());
    assert!(
        text(&refused.stderr).contains("FLOWCRAFT_REGISTRY_USERNAME"),
        "{}",
        text(&refused.stderr)
    );
    let accepted = Command::new(env!("CARGO_BIN_EXE_flowcraft-host"))
        .args(args)
        .env("FLOWCRAFT_LOG", "warn")
        .env("DOCKER_CONFIG", dir.path())
        .env("FLOWCRAFT_REGISTRY_USERNAME", USERNAME)
        .env("FLOWCRAFT_REGISTRY_PASSWORD", PASSWORD)
        .output()
        .unwrap();
    assert!(accepted.status.success(), "{}", text(&accepted.stderr));
}
