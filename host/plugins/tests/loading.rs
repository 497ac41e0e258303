//! Loading bundles: the compiled-code cache, `check_bundle` on good and bad
//! files, listings and grants.

mod common;

use common::*;
use flowcraft_core::runner::NodeRunner;
use flowcraft_plugins::{Grants, PluginConfig, PluginError, PluginHost, check_bundle};
use wasm_encoder::{
    Component, ComponentExportKind, ComponentExportSection, ComponentImportSection,
    ComponentInstanceSection, ComponentTypeRef, ComponentTypeSection, InstanceType,
};

/// A component importing `imports` (empty instances) and exporting empty
/// instances named `exports`.
fn hand_made_component(imports: &[&str], exports: &[&str]) -> Vec<u8> {
    let mut component = Component::new();
    let mut instance_count = 0;
    if !imports.is_empty() {
        let mut types = ComponentTypeSection::new();
        types.instance(&InstanceType::new());
        component.section(&types);
        let mut section = ComponentImportSection::new();
        for name in imports {
            section.import(*name, ComponentTypeRef::Instance(0));
            instance_count += 1;
        }
        component.section(&section);
    }
    if !exports.is_empty() {
        let mut instances = ComponentInstanceSection::new();
        for _ in exports {
            instances.export_items(Vec::<(&str, ComponentExportKind, u32)>::new());
        }
        component.section(&instances);
        let mut section = ComponentExportSection::new();
        for (offset, name) in exports.iter().enumerate() {
            section.export(
                *name,
                ComponentExportKind::Instance,
                instance_count + offset as u32,
                None,
            );
        }
        component.section(&section);
    }
    component.finish()
}

fn write_temp(name: &str, bytes: &[u8]) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    (dir, path)
}

#[tokio::test]
async fn the_second_load_comes_from_the_disk_cache() {
    let dir = plugins_dir(&["testkit/trivial.wasm"]);
    let cache = tempfile::tempdir().unwrap();
    let mut config = PluginConfig::new(dir.path());
    config.cache_dir = Some(cache.path().to_owned());

    let first = PluginHost::load(config.clone()).await.unwrap();
    let digest = first.bundles()[0].digest.clone();
    assert_eq!(
        first.loaded_from_cache(&digest),
        Some(false),
        "first load compiles"
    );
    drop(first);

    let second = PluginHost::load(config).await.unwrap();
    assert_eq!(
        second.loaded_from_cache(&digest),
        Some(true),
        "second load hits the cache"
    );
    assert!(
        second.run(call("noop")).await.result.is_ok(),
        "a cached bundle runs"
    );

    let artifacts: Vec<_> = walk(cache.path())
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .collect();
    assert_eq!(artifacts.len(), 1, "{artifacts:?}");
    let name = artifacts[0]
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert_eq!(
        name,
        format!("{}.cwasm", digest.trim_start_matches("sha256:"))
    );
    let engine_dir = artifacts[0]
        .parent()
        .unwrap()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert!(
        engine_dir.starts_with("engine-"),
        "keyed by engine compatibility: {engine_dir}"
    );
}

#[tokio::test]
async fn the_default_cache_lives_in_the_users_cache_dir_not_the_plugins_dir() {
    let dir = plugins_dir(&["testkit/trivial.wasm"]);
    let config = PluginConfig::new(dir.path());
    let expected = dirs::cache_dir().map_or_else(
        || dir.path().join(".cache"),
        |user| user.join("flowcraft-host"),
    );
    assert_eq!(config.effective_cache_dir(), expected);
    let host = PluginHost::load(config).await.unwrap();
    assert_eq!(host.bundles().len(), 1);
    assert!(expected.is_dir());
    assert_eq!(
        dir.path().join(".cache").exists(),
        dirs::cache_dir().is_none(),
        "the bundle directory stays as shipped"
    );
}

#[tokio::test]
async fn a_corrupt_cache_artifact_is_recompiled() {
    let dir = plugins_dir(&["testkit/trivial.wasm"]);
    let cache = tempfile::tempdir().unwrap();
    let mut config = PluginConfig::new(dir.path());
    config.cache_dir = Some(cache.path().to_owned());
    let digest = PluginHost::load(config.clone()).await.unwrap().bundles()[0]
        .digest
        .clone();
    for artifact in walk(cache.path()) {
        std::fs::write(artifact, b"garbage").unwrap();
    }
    let host = PluginHost::load(config).await.unwrap();
    assert_eq!(host.loaded_from_cache(&digest), Some(false));
    assert!(host.problems().is_empty());
}

#[tokio::test]
async fn check_bundle_describes_a_good_bundle() {
    let info = check_bundle(bundle("conformance.wasm")).await.unwrap();
    assert!(!info.name.is_empty());
    assert!(semver_like(&info.version), "{}", info.version);
    assert_eq!(info.nodes.len(), 19);
    assert!(info.digest.starts_with("sha256:"));
}

#[tokio::test]
async fn check_bundle_rejects_files_that_are_not_components() {
    let (_dir, text) = write_temp("notes.wasm", b"this is not wasm at all");
    let error = check_bundle(&text).await.unwrap_err();
    assert!(
        matches!(error, PluginError::NotAComponent { .. }),
        "{error}"
    );
    assert!(
        error.to_string().contains("is not a WebAssembly component"),
        "{error}"
    );

    // The smallest valid core module: header only.
    let (_dir, module) = write_temp("module.wasm", b"\0asm\x01\0\0\0");
    let error = check_bundle(&module).await.unwrap_err().to_string();
    assert!(
        error.contains("core WebAssembly module") && error.contains("wasm32-wasip2"),
        "{error}"
    );

    let (_dir, truncated) = write_temp(
        "broken.wasm",
        &std::fs::read(bundle("testkit/trivial.wasm")).unwrap()[..300],
    );
    let error = check_bundle(&truncated).await.unwrap_err();
    assert!(matches!(error, PluginError::Compile { .. }), "{error}");
    assert!(error.to_string().contains("broken.wasm"), "{error}");
}

#[tokio::test]
async fn check_bundle_rejects_components_with_the_wrong_interface() {
    let (_dir, empty) = write_temp("empty.wasm", &hand_made_component(&[], &[]));
    let error = check_bundle(&empty).await.unwrap_err();
    assert!(
        matches!(error, PluginError::WrongInterface { .. }),
        "{error}"
    );
    let text = error.to_string();
    assert!(
        text.contains("does not export the flowcraft:node/node interface")
            && text.contains("exports nothing"),
        "{text}"
    );

    let (_dir, command) = write_temp(
        "command.wasm",
        &hand_made_component(&[], &["wasi:cli/run@0.2.0"]),
    );
    let text = check_bundle(&command).await.unwrap_err().to_string();
    assert!(text.contains("it exports wasi:cli/run@0.2.0"), "{text}");

    let (_dir, newer) = write_temp(
        "newer.wasm",
        &hand_made_component(
            &["flowcraft:node/host@0.2.0"],
            &["flowcraft:node/node@0.2.0"],
        ),
    );
    let text = check_bundle(&newer).await.unwrap_err().to_string();
    assert!(
        text.contains("flowcraft:node/node@0.2.0")
            && text.contains("this host implements flowcraft:node@0.1.0"),
        "{text}"
    );

    let (_dir, hollow) = write_temp(
        "hollow.wasm",
        &hand_made_component(&[], &["flowcraft:node/node@0.1.0"]),
    );
    let error = check_bundle(&hollow).await.unwrap_err();
    assert!(
        matches!(error, PluginError::WrongInterface { .. }),
        "{error}"
    );
    assert!(
        error.to_string().contains("describe"),
        "names the missing function: {error}"
    );
}

#[tokio::test]
async fn broken_files_are_reported_and_the_rest_load() {
    let dir = plugins_dir(&["testkit/trivial.wasm"]);
    std::fs::write(dir.path().join("broken.wasm"), b"\0asm\x0d\0\x01\0garbage").unwrap();
    std::fs::write(dir.path().join("readme.txt"), b"ignored").unwrap();
    let host = PluginHost::load(config(dir.path())).await.unwrap();
    assert_eq!(host.bundles().len(), 1);
    let problems = host.problems();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].path.ends_with("broken.wasm"));
    assert!(
        problems[0].error.contains("cannot compile bundle"),
        "{}",
        problems[0].error
    );
}

#[tokio::test]
async fn a_missing_plugins_dir_is_a_clear_error() {
    let error = PluginHost::load(PluginConfig::new("/nonexistent/plugins"))
        .await
        .err()
        .unwrap();
    assert!(
        error.to_string().contains("/nonexistent/plugins"),
        "{error}"
    );
}

#[tokio::test]
async fn listings_show_grant_names_but_not_values() {
    let dir = plugins_dir(&["testkit/hostile.wasm", "testkit/trivial.wasm"]);
    let mut config = config(dir.path());
    let mut grants = Grants::default();
    grants.config.insert("api-token".into(), "s3cret".into());
    config.grants.insert("hostile".into(), grants);
    let host = PluginHost::load(config).await.unwrap();
    let bundles = host.bundles();
    let hostile = bundles
        .iter()
        .find(|b| b.name == "hostile")
        .expect("hostile listed");
    assert_eq!(hostile.granted_config, vec!["api-token".to_string()]);
    let trivial = bundles
        .iter()
        .find(|b| b.name == "trivial")
        .expect("trivial listed");
    assert!(trivial.granted_config.is_empty());
    assert!(!format!("{bundles:?}").contains("s3cret"));
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

fn semver_like(version: &str) -> bool {
    version.split('.').count() >= 3
}
