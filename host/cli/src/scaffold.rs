//! `flowcraft-host plugins new NAME --lang rust|ts|py`: writes a bundle
//! project — manifest, one example node with its unit tests, a blueprint
//! that runs it, and a README with the commands to test, build and run it —
//! that works as generated, also outside this repository.
//!
//! The templates are the files under `host/cli/templates/`, compiled into the
//! binary. They have four placeholders, replaced as plain text (no template
//! engine is needed for that): `{{name}}` the bundle name, `{{crate}}` and
//! `{{module}}` its Rust library and Python package names, `{{sdk}}` where
//! the SDK comes from.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use clap::ValueEnum;

/// The language of a new bundle project.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Language {
    /// Rust, with the flowcraft-sdk crate.
    Rust,
    /// TypeScript, with the flowcraft-node npm package.
    Ts,
    /// Python, with the flowcraft-node Python package.
    Py,
}

/// One file of a template: where it goes in the project, and its text.
struct TemplateFile {
    path: &'static str,
    text: &'static str,
}

macro_rules! template_file {
    ($path:literal, $source:literal) => {
        TemplateFile {
            path: $path,
            text: include_str!(concat!("../templates/", $source)),
        }
    };
}

const EXAMPLE_BLUEPRINT: TemplateFile =
    template_file!("blueprints/example.json", "shared/example.json");

const RUST: &[TemplateFile] = &[
    template_file!("Cargo.toml", "rust/Cargo.toml.tmpl"),
    template_file!("src/lib.rs", "rust/src/lib.rs"),
    template_file!("README.md", "rust/README.md"),
    template_file!(".gitignore", "rust/gitignore"),
    EXAMPLE_BLUEPRINT,
];

const TYPESCRIPT: &[TemplateFile] = &[
    template_file!("package.json", "ts/package.json.tmpl"),
    template_file!("tsconfig.json", "ts/tsconfig.json"),
    template_file!("src/index.ts", "ts/src/index.ts"),
    template_file!("test/greet.test.ts", "ts/test/greet.test.ts"),
    template_file!("README.md", "ts/README.md"),
    template_file!(".gitignore", "ts/gitignore"),
    EXAMPLE_BLUEPRINT,
];

const PYTHON: &[TemplateFile] = &[
    template_file!("pyproject.toml", "py/pyproject.toml.tmpl"),
    template_file!("{{module}}/__init__.py", "py/module_init.py"),
    template_file!("tests/test_greet.py", "py/tests/test_greet.py"),
    template_file!("README.md", "py/README.md"),
    template_file!(".gitignore", "py/gitignore"),
    EXAMPLE_BLUEPRINT,
];

/// Where the SDK of each language is published (once it is), as a dependency.
const PUBLISHED_SDK: [(Language, &str); 3] = [
    (
        Language::Rust,
        "flowcraft-sdk = { git = \"https://github.com/flowcraft-host/flowcraft-host\" }",
    ),
    (Language::Ts, "^0.1.0"),
    (Language::Py, "flowcraft-node>=0.1,<0.2"),
];

/// What to generate.
pub struct NewProject {
    pub name: String,
    pub language: Language,
    /// The project directory (created; must not exist or be empty).
    pub dir: PathBuf,
    /// A flowcraft-host checkout whose SDKs the project depends on, instead
    /// of the published packages.
    pub sdk_checkout: Option<PathBuf>,
}

/// Writes the project and returns the files written.
pub fn create(project: &NewProject) -> Result<Vec<PathBuf>> {
    check_bundle_name(&project.name)?;
    check_empty(&project.dir)?;
    let sdk = sdk_dependency(project.language, project.sdk_checkout.as_deref())?;
    let placeholders = [
        ("{{name}}", project.name.as_str()),
        ("{{crate}}", &project.name.replace('-', "_")),
        ("{{module}}", &project.name.replace('-', "_")),
        ("{{sdk}}", &sdk),
    ];
    let render = |text: &str| {
        placeholders
            .iter()
            .fold(text.to_owned(), |text, (placeholder, value)| {
                text.replace(placeholder, value)
            })
    };
    let mut written = Vec::new();
    for file in template(project.language) {
        let path = project.dir.join(render(file.path));
        let parent = path
            .parent()
            .expect("template paths are relative to the project");
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
        std::fs::write(&path, render(file.text))
            .with_context(|| format!("writing {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

fn template(language: Language) -> &'static [TemplateFile] {
    match language {
        Language::Rust => RUST,
        Language::Ts => TYPESCRIPT,
        Language::Py => PYTHON,
    }
}

/// Bundle names are what blueprints bind by, and become a crate, npm package
/// and Python package name: lower-case letters, digits and single hyphens.
fn check_bundle_name(name: &str) -> Result<()> {
    let well_formed = name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && !name.contains("--")
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    ensure!(
        well_formed,
        "bundle name '{name}': use lower-case letters, digits and single hyphens, starting with a letter \
         (at most 64 characters), e.g. my-nodes"
    );
    Ok(())
}

fn check_empty(dir: &Path) -> Result<()> {
    let Ok(mut entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    if entries.next().is_some() {
        bail!(
            "{} exists and is not empty: choose another NAME or --dir",
            dir.display()
        );
    }
    Ok(())
}

/// The dependency on the SDK: the published package, or the one in `checkout`.
fn sdk_dependency(language: Language, checkout: Option<&Path>) -> Result<String> {
    let Some(checkout) = checkout else {
        let (_, published) = PUBLISHED_SDK
            .iter()
            .find(|(published_for, _)| *published_for == language)
            .expect("every language has a published SDK");
        return Ok((*published).to_owned());
    };
    let sdk_dir = match language {
        Language::Rust => "sdk",
        Language::Ts => "sdk-js",
        Language::Py => "sdk-py",
    };
    let dir = checkout.join(sdk_dir);
    let dir = dir.canonicalize().with_context(|| {
        format!(
            "--sdk-path {}: no {sdk_dir}/ there; give the directory of a flowcraft-host checkout",
            checkout.display()
        )
    })?;
    let dir = dir.display();
    Ok(match language {
        Language::Rust => format!("flowcraft-sdk = {{ path = {:?} }}", dir.to_string()),
        Language::Ts => format!("file:{dir}"),
        Language::Py => format!("flowcraft-node @ file://{dir}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundle_names_must_suit_every_language() {
        for good in ["orders", "my-nodes", "a1-b2"] {
            assert!(check_bundle_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "Orders",
            "1st",
            "my_nodes",
            "my--nodes",
            "nodes-",
            "my nodes",
        ] {
            assert!(check_bundle_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn every_template_names_its_placeholders_only() {
        for language in [Language::Rust, Language::Ts, Language::Py] {
            for file in template(language) {
                let rest = ["{{name}}", "{{crate}}", "{{module}}", "{{sdk}}"]
                    .iter()
                    .fold(file.text.to_owned(), |text, placeholder| {
                        text.replace(placeholder, "")
                    });
                assert!(
                    !rest.contains("{{"),
                    "{} has an unknown placeholder",
                    file.path
                );
            }
        }
    }
}
