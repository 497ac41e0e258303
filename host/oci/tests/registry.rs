//! Publishing and fetching bundles against a real registry
//! (`docker-registry`, see `support`).

mod support;

use std::collections::BTreeMap;

use flowcraft_oci::{
    BundleStore, CONFIG_MEDIA_TYPE, ComponentInterfaces, Credentials, Digest, LAYER_MEDIA_TYPE,
    OciError, Reference, Registry, WasmConfig,
};
use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::secrets::RegistryAuth;
use support::{LocalRegistry, PASSWORD, USERNAME};

fn reference(registry: &LocalRegistry, repository_and_tag: &str) -> Reference {
    format!("{}/{repository_and_tag}", registry.host())
        .parse()
        .unwrap()
}

fn anonymous(reference: &Reference) -> Registry {
    Registry::for_reference(reference, &Credentials::default(), false)
}

fn interfaces() -> ComponentInterfaces {
    ComponentInterfaces {
        exports: vec!["flowcraft:node/node@0.1.0".into()],
        imports: vec!["flowcraft:node/host@0.1.0".into()],
        target: Some("flowcraft:node/bundle@0.1.0".into()),
    }
}

#[tokio::test]
async fn a_pushed_component_resolves_and_fetches_by_tag_and_by_digest() {
    let local = LocalRegistry::anonymous();
    let tagged = reference(&local, "nodes/orders:1.2.0");
    let registry = anonymous(&tagged);
    let component = b"\0asm component bytes".to_vec();
    let annotations = BTreeMap::from([(
        "org.opencontainers.image.version".to_owned(),
        "1.2.0".to_owned(),
    )]);
    let published = registry
        .push(&tagged, component.clone(), Some(interfaces()), annotations)
        .await
        .unwrap();
    assert_eq!(published.component, Digest::of(&component));

    let by_tag = registry.resolve(&tagged).await.unwrap();
    assert_eq!(by_tag.manifest, published.manifest);
    assert_eq!(by_tag.component, published.component);
    assert_eq!(by_tag.size, component.len() as u64);
    let pinned = reference(&local, &format!("nodes/orders@{}", published.manifest));
    assert_eq!(registry.resolve(&pinned).await.unwrap(), by_tag);
    assert_eq!(
        registry.fetch(&tagged, &published.component).await.unwrap(),
        component
    );
}

#[tokio::test]
async fn the_artifact_has_the_wasm_media_types_and_config() {
    let local = LocalRegistry::anonymous();
    let tagged = reference(&local, "nodes/greeter:0.1.0");
    let component = b"\0asm greeter".to_vec();
    anonymous(&tagged)
        .push(
            &tagged,
            component.clone(),
            Some(interfaces()),
            BTreeMap::new(),
        )
        .await
        .unwrap();

    let client = oci_client::Client::new(ClientConfig {
        protocol: ClientProtocol::Http,
        ..ClientConfig::default()
    });
    let (manifest, _) = client
        .pull_image_manifest(&tagged, &RegistryAuth::Anonymous)
        .await
        .unwrap();
    assert_eq!(manifest.config.media_type, CONFIG_MEDIA_TYPE);
    assert_eq!(manifest.layers.len(), 1);
    assert_eq!(manifest.layers[0].media_type, LAYER_MEDIA_TYPE);
    let mut config = Vec::new();
    client
        .pull_blob(&tagged, &manifest.config, &mut config)
        .await
        .unwrap();
    let config: WasmConfig = serde_json::from_slice(&config).unwrap();
    assert_eq!(
        (config.architecture.as_str(), config.os.as_str()),
        ("wasm", "wasip2")
    );
    assert_eq!(
        config.layer_digests,
        vec![Digest::of(&component).to_string()]
    );
    assert_eq!(config.component, Some(interfaces()));
}

#[tokio::test]
async fn an_unknown_tag_is_not_found_and_names_the_reference() {
    let local = LocalRegistry::anonymous();
    let missing = reference(&local, "nodes/orders:9.9.9");
    let error = anonymous(&missing).resolve(&missing).await.unwrap_err();
    assert!(matches!(error, OciError::NotFound { .. }), "{error}");
    assert!(error.to_string().contains("nodes/orders:9.9.9"), "{error}");
}

#[tokio::test]
async fn an_image_that_is_no_component_is_refused() {
    let local = LocalRegistry::anonymous();
    let image = reference(&local, "nodes/not-wasm:1");
    let client = oci_client::Client::new(ClientConfig {
        protocol: ClientProtocol::Http,
        ..ClientConfig::default()
    });
    let layers = [ImageLayer::oci_v1(b"a tar layer".to_vec(), None)];
    client
        .push(
            &image,
            &layers,
            Config::oci_v1(b"{}".to_vec(), None),
            &RegistryAuth::Anonymous,
            None,
        )
        .await
        .unwrap();
    let error = anonymous(&image).resolve(&image).await.unwrap_err();
    assert!(matches!(error, OciError::NotAComponent { .. }), "{error}");
    assert!(error.to_string().contains("plugins push"), "{error}");
}

#[tokio::test]
async fn a_registry_with_logins_refuses_strangers_and_takes_a_docker_login() {
    let local = LocalRegistry::with_logins();
    let tagged = reference(&local, "nodes/orders:1.0.0");
    let error = anonymous(&tagged)
        .push(&tagged, b"\0asm".to_vec(), None, BTreeMap::new())
        .await
        .unwrap_err();
    assert!(matches!(error, OciError::Unauthorized { .. }), "{error}");
    assert!(error.to_string().contains(&local.host()), "{error}");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.json");
    std::fs::write(
        &file,
        serde_json::json!({"auths": {local.host(): {"username": USERNAME, "password": PASSWORD}}})
            .to_string(),
    )
    .unwrap();
    let credentials = Credentials::default()
        .with_docker_config_file(&file)
        .unwrap();
    let registry = Registry::for_reference(&tagged, &credentials, false);
    let published = registry
        .push(&tagged, b"\0asm".to_vec(), None, BTreeMap::new())
        .await
        .unwrap();
    assert_eq!(
        registry.resolve(&tagged).await.unwrap().manifest,
        published.manifest
    );
    let fresh = Registry::for_reference(&tagged, &credentials, false);
    let fetched = fresh.fetch(&tagged, &published.component).await.unwrap();
    assert_eq!(fetched, b"\0asm", "a fetch by digest alone logs in too");
}

#[tokio::test]
async fn a_component_altered_in_the_registry_is_refused() {
    let local = LocalRegistry::anonymous();
    let tagged = reference(&local, "nodes/orders:1.0.1");
    let registry = anonymous(&tagged);
    let published = registry
        .push(&tagged, b"\0asm original".to_vec(), None, BTreeMap::new())
        .await
        .unwrap();
    let hex = published.component.hex();
    let blob = local
        .storage
        .join("docker/registry/v2/blobs/sha256")
        .join(&hex[..2])
        .join(hex)
        .join("data");
    std::fs::write(&blob, b"\0asm tampered").unwrap();
    let error = registry
        .fetch(&tagged, &published.component)
        .await
        .unwrap_err();
    assert!(matches!(error, OciError::DigestMismatch { .. }), "{error}");
}

#[tokio::test]
async fn fetched_components_are_kept_by_digest() {
    let local = LocalRegistry::anonymous();
    let tagged = reference(&local, "nodes/orders:2.0.0");
    let registry = anonymous(&tagged);
    let component = b"\0asm kept".to_vec();
    let published = registry
        .push(&tagged, component.clone(), None, BTreeMap::new())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = BundleStore::new(dir.path());
    let fetched = registry.fetch(&tagged, &published.component).await.unwrap();
    let (digest, path) = store.put(&fetched).await.unwrap();
    assert_eq!(digest, published.component);
    assert_eq!(store.get(&published.component), Some(path.clone()));
    assert_eq!(std::fs::read(path).unwrap(), component);
}

fn list_of(dir: &std::path::Path, references: &[&str]) -> flowcraft_oci::BundleList {
    let text: String = references
        .iter()
        .map(|reference| format!("[[bundles]]\nreference = \"{reference}\"\n"))
        .collect();
    flowcraft_oci::BundleList::parse(&dir.join("bundles.toml"), &text).unwrap()
}

#[tokio::test]
async fn a_bundle_list_follows_its_tags_and_serves_the_last_resolution_while_the_registry_is_away()
{
    let local = LocalRegistry::anonymous();
    let tagged = reference(&local, "nodes/orders:stable");
    let registry = anonymous(&tagged);
    let dir = tempfile::tempdir().unwrap();
    let store = || BundleStore::new(dir.path().join("bundles"));
    let resolver = flowcraft_oci::ListResolver::new(
        list_of(dir.path(), &[&tagged.whole()]),
        store(),
        Credentials::default(),
    );

    let first = registry
        .push(&tagged, b"\0asm version 1".to_vec(), None, BTreeMap::new())
        .await
        .unwrap();
    let resolved = resolver.resolve().await.unwrap();
    assert_eq!(
        std::fs::read(&resolved[0].path).unwrap(),
        b"\0asm version 1"
    );
    assert_eq!(
        resolved[0].origin.as_ref().unwrap().component,
        first.component.to_string()
    );

    let second = registry
        .push(&tagged, b"\0asm version 2".to_vec(), None, BTreeMap::new())
        .await
        .unwrap();
    let moved = resolver.resolve().await.unwrap();
    assert_eq!(std::fs::read(&moved[0].path).unwrap(), b"\0asm version 2");
    assert_eq!(
        moved[0].origin.as_ref().unwrap().manifest,
        second.manifest.to_string()
    );

    let other = reference(&local, "nodes/never-resolved:1");
    drop(local);
    assert_eq!(
        resolver.resolve().await.unwrap(),
        moved,
        "the registry is gone"
    );
    let restarted = flowcraft_oci::ListResolver::new(
        list_of(dir.path(), &[&tagged.whole()]),
        store(),
        Credentials::default(),
    );
    assert_eq!(restarted.resolve().await.unwrap(), moved, "after a restart");
    let never = flowcraft_oci::ListResolver::new(
        list_of(dir.path(), &[&other.whole()]),
        store(),
        Credentials::default(),
    );
    let error = never.resolve().await.unwrap_err().to_string();
    assert!(error.contains("nodes/never-resolved:1"), "{error}");
}
