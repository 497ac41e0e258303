//! `flowcraft-host plugins list|check|compile|new|push|pull`: what bundles
//! are loaded, whether a file is a valid bundle, compiling bundles ahead of a
//! deploy, starting a bundle project, and publishing bundles to and fetching
//! them from OCI registries.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Subcommand;
use flowcraft_azure::credential::CredentialKind;
use flowcraft_oci::{BundleStore, ComponentInterfaces, OciError, Origin, Reference, Registry};
use flowcraft_plugins::{BundleInfo, bundle_world, check_bundle, default_cache_dir};
use serde::Serialize;

/// The registry login for `plugins push` and `plugins pull`.
const USERNAME_VARIABLE: &str = "FLOWCRAFT_REGISTRY_USERNAME";
const PASSWORD_VARIABLE: &str = "FLOWCRAFT_REGISTRY_PASSWORD";

use crate::PluginArgs;
use crate::plugin_source::{LoadedPlugins, PluginSource};
use crate::registry_auth::registry_credentials;
use crate::scaffold::{self, Language, NewProject};
use crate::setup::plugin_config;

#[derive(Subcommand)]
pub enum PluginsCommand {
    /// Print each bundle of --plugins DIR|LIST: name, version, digest, node types, grants, origin.
    List {
        #[command(flatten)]
        plugins: PluginArgs,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Compile every bundle of --plugins DIR|LIST into the compile cache (--cache-dir), so that
    /// workers using that cache start and hot-swap without compiling; fails if a bundle does not load.
    Compile {
        #[command(flatten)]
        plugins: PluginArgs,
    },
    /// Start a bundle project NAME (a directory of that name): one example node, its unit test,
    /// a blueprint running it, and a README with the commands to test, build and run it.
    New {
        /// The bundle's name: lower-case letters, digits and hyphens.
        name: String,
        /// The language the nodes are written in.
        #[arg(long, value_enum)]
        lang: Language,
        /// Where to create the project [default: ./NAME].
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// Depend on the SDK in this flowcraft-host checkout instead of the published package
        /// (needed until the SDKs are published; for TypeScript, build sdk-js there first).
        #[arg(long, value_name = "CHECKOUT")]
        sdk_path: Option<PathBuf>,
    },
    /// Check that FILE is a loadable bundle (a component exporting flowcraft:node).
    Check {
        /// The .wasm file.
        file: PathBuf,
    },
    /// Publish bundle FILE to an OCI registry as REFERENCE; prints the manifest's sha256: digest.
    Push {
        /// The .wasm file (checked to be a bundle first).
        file: PathBuf,
        /// Where to publish it, e.g. myacr.azurecr.io/nodes/orders:1.2.0.
        reference: String,
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Fetch the bundle REFERENCE names into the bundle cache; prints its path and digest.
    Pull {
        /// A tag (ghcr.io/acme/orders:1.2.0) or digest (…/orders@sha256:…) reference.
        reference: String,
        #[command(flatten)]
        registry: RegistryArgs,
        /// Where pulled bundles are kept (under bundles/) [default: flowcraft-host in the user's cache directory].
        #[arg(long, value_name = "DIR")]
        cache_dir: Option<PathBuf>,
    },
}

/// A bundle as `plugins list` shows it: with the registry reference it came
/// from, if it came from one.
#[derive(Serialize)]
struct ListedBundle {
    #[serde(flatten)]
    bundle: BundleInfo,
    #[serde(skip_serializing_if = "Option::is_none")]
    origin: Option<Origin>,
}

/// How to reach a registry. Loopback registries are reached over plain HTTP,
/// others over HTTPS; credentials come from FLOWCRAFT_REGISTRY_USERNAME and
/// FLOWCRAFT_REGISTRY_PASSWORD, else from Docker's config.json ($DOCKER_CONFIG
/// or ~/.docker), else for an Azure Container Registry from
/// --registry-credential, else none.
#[derive(clap::Args)]
pub struct RegistryArgs {
    /// Use plain HTTP for a registry that is not on this machine.
    #[arg(long)]
    insecure: bool,
    /// Entra ID credential for an Azure Container Registry without a login in Docker's
    /// config.json; the identity needs AcrPull to pull and AcrPush to push.
    #[arg(long, value_name = "KIND", env = "FLOWCRAFT_REGISTRY_CREDENTIAL", value_parser = crate::config::credential_parser())]
    registry_credential: Option<CredentialKind>,
}

pub async fn plugins(command: PluginsCommand) -> Result<ExitCode> {
    match command {
        PluginsCommand::List { plugins, json } => {
            let loaded = load(&plugins).await?;
            let bundles: Vec<ListedBundle> = loaded
                .host
                .bundles()
                .into_iter()
                .map(|bundle| ListedBundle {
                    origin: loaded.origins.get(&bundle.path).cloned(),
                    bundle,
                })
                .collect();
            if json {
                println!("{}", serde_json::to_string_pretty(&bundles)?);
            } else {
                for listed in &bundles {
                    print_bundle(&listed.bundle);
                    if let Some(origin) = &listed.origin {
                        println!(
                            "    from {} (manifest {})",
                            origin.reference, origin.manifest
                        );
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        PluginsCommand::Compile { plugins } => compile(&plugins).await,
        PluginsCommand::New {
            name,
            lang,
            dir,
            sdk_path,
        } => {
            let dir = dir.unwrap_or_else(|| PathBuf::from(&name));
            let project = NewProject {
                name,
                language: lang,
                dir,
                sdk_checkout: sdk_path,
            };
            for file in scaffold::create(&project)? {
                println!("{}", file.display());
            }
            eprintln!(
                "created {}: see {} for the commands to test, build and run it",
                project.dir.display(),
                project.dir.join("README.md").display()
            );
            Ok(ExitCode::SUCCESS)
        }
        PluginsCommand::Check { file } => {
            let info = checked(&file).await?;
            println!("{}: ok", file.display());
            print_bundle(&info);
            Ok(ExitCode::SUCCESS)
        }
        PluginsCommand::Push {
            file,
            reference,
            registry,
        } => push(&file, &reference, &registry).await,
        PluginsCommand::Pull {
            reference,
            registry,
            cache_dir,
        } => pull(&reference, &registry, cache_dir).await,
    }
}

/// The bundles of `--plugins`, loaded as a worker loads them (compiled code
/// from and into the cache directory).
async fn load(plugins: &PluginArgs) -> Result<LoadedPlugins> {
    let source = PluginSource::open(
        plugins.dir()?,
        plugins.cache_dir.as_deref(),
        plugins.registry_credential,
    )?;
    source
        .load(plugin_config(
            plugins.cache_dir.clone(),
            Default::default(),
            None,
        ))
        .await
}

async fn compile(plugins: &PluginArgs) -> Result<ExitCode> {
    let started = Instant::now();
    let loaded = load(plugins).await?;
    let host = &loaded.host;
    for bundle in host.bundles() {
        let state = match host.loaded_from_cache(&bundle.digest) {
            Some(true) => "already compiled",
            _ => "compiled",
        };
        let artifact = host
            .compiled_artifact(&bundle.digest)
            .context("the compile cache could not be written: see the warning above")?;
        let megabytes = std::fs::metadata(&artifact).map_or(0.0, |m| m.len() as f64 / 1e6);
        println!(
            "{}@{}  {}  {state} ({megabytes:.1} MB)",
            bundle.name, bundle.version, bundle.digest
        );
    }
    let problems = host.problems();
    for problem in &problems {
        eprintln!("{}: {}", problem.path.display(), problem.error);
    }
    eprintln!(
        "{} bundles ready in {:.1} s, {} failed to load",
        host.bundles().len(),
        started.elapsed().as_secs_f64(),
        problems.len()
    );
    Ok(if problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn checked(file: &Path) -> Result<BundleInfo> {
    check_bundle(file)
        .await
        .with_context(|| format!("{} is not a valid bundle", file.display()))
}

async fn push(file: &Path, reference: &str, args: &RegistryArgs) -> Result<ExitCode> {
    let info = checked(file).await?;
    let component = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let reference = parse_reference(reference)?;
    let interfaces = ComponentInterfaces {
        exports: info.exports.clone(),
        imports: info.imports.clone(),
        target: Some(bundle_world()),
    };
    let annotations = BTreeMap::from([
        (
            "org.opencontainers.image.title".to_owned(),
            info.name.clone(),
        ),
        (
            "org.opencontainers.image.version".to_owned(),
            info.version.clone(),
        ),
    ]);
    let published = registry(&reference, args)?
        .push(&reference, component, Some(interfaces), annotations)
        .await?;
    eprintln!(
        "pushed {}@{} (bundle {}) to {}",
        info.name,
        info.version,
        published.component,
        reference.whole()
    );
    println!("{}", published.manifest);
    Ok(ExitCode::SUCCESS)
}

async fn pull(
    reference: &str,
    args: &RegistryArgs,
    cache_dir: Option<PathBuf>,
) -> Result<ExitCode> {
    let reference = parse_reference(reference)?;
    let cache_dir = cache_dir
        .or_else(default_cache_dir)
        .context("no cache directory: give --cache-dir DIR")?;
    let store = BundleStore::new(cache_dir.join("bundles"));
    let (resolved, path) = registry(&reference, args)?
        .pull_into(&reference, &store)
        .await?;
    let info = checked(&path).await?;
    println!("{}  {}", resolved.component, path.display());
    eprintln!(
        "{}@{} from {} (manifest {})",
        info.name,
        info.version,
        reference.whole(),
        resolved.manifest
    );
    Ok(ExitCode::SUCCESS)
}

fn parse_reference(text: &str) -> Result<Reference> {
    text.parse::<Reference>().map_err(|error| {
        OciError::InvalidReference {
            reference: text.to_owned(),
            reason: error.to_string(),
        }
        .into()
    })
}

/// A client of the registry `reference` lives in, with the credentials
/// the environment gives for it.
fn registry(reference: &Reference, args: &RegistryArgs) -> Result<Registry> {
    let mut credentials = registry_credentials(args.registry_credential)?;
    if let (Ok(username), Ok(password)) = (
        std::env::var(USERNAME_VARIABLE),
        std::env::var(PASSWORD_VARIABLE),
    ) {
        credentials = credentials.with_login(reference.resolve_registry(), username, password);
    }
    Ok(Registry::for_reference(
        reference,
        &credentials,
        args.insecure,
    ))
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
