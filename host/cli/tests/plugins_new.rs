//! `flowcraft-host plugins new NAME --lang rust|ts|py` as a user meets it: the
//! project is created in an empty directory outside the repository, then the
//! commands of its README's shell block are run there one by one, as written
//! (with this build's `flowcraft-host` on `PATH`), and the last one — a run of
//! the example blueprint — must complete with the example node's greeting.
//! The projects depend on this checkout's SDKs (`--sdk-path`), which
//! `scripts/build-plugins.sh` has built.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The lines of the first ```sh block of `readme`.
fn readme_commands(readme: &str) -> Vec<String> {
    let block = readme
        .split_once("```sh\n")
        .and_then(|(_, rest)| rest.split_once("```"))
        .map(|(block, _)| block)
        .expect("the README has a ```sh block");
    block
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(str::to_owned)
        .collect()
}

/// Runs `command` in `dir` the way a user's shell would, with this build's
/// binary first on `PATH`.
fn shell(dir: &Path, command: &str) -> Output {
    let binary_dir = Path::new(env!("CARGO_BIN_EXE_flowcraft-host"))
        .parent()
        .unwrap();
    let path = format!(
        "{}:{}",
        binary_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    Command::new("bash")
        .args(["-c", command])
        .current_dir(dir)
        .env("PATH", path)
        .env("FLOWCRAFT_LOG", "warn")
        // The project builds into its own target/, as its README says.
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .expect("bash runs")
}

/// Creates a project in `lang` and follows its README; returns the last command's result.
fn create_and_follow_readme(lang: &str) -> Value {
    let parent = tempfile::tempdir().unwrap();
    let name = format!("greeter-{lang}");
    let created = Command::new(env!("CARGO_BIN_EXE_flowcraft-host"))
        .args(["plugins", "new", &name, "--lang", lang, "--sdk-path"])
        .arg(root())
        .current_dir(parent.path())
        .output()
        .unwrap();
    assert_eq!(created.status.code(), Some(0), "{}", text(&created.stderr));
    let project = parent.path().join(&name);
    let readme = std::fs::read_to_string(project.join("README.md")).unwrap();
    let commands = readme_commands(&readme);
    let (run, setup) = commands.split_last().expect("the README has commands");
    for command in setup {
        let output = shell(&project, command);
        assert!(
            output.status.success(),
            "`{command}` failed:\n{}\n{}",
            text(&output.stdout),
            text(&output.stderr)
        );
    }
    let output = shell(&project, run);
    assert!(
        output.status.success(),
        "`{run}` failed: {}",
        text(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("the run prints one JSON object")
}

fn assert_greeted(result: &Value) {
    assert_eq!(result["status"], "completed", "{result}");
    assert_eq!(
        result["context"]["_outputs.greet"], "Hello, Ada!",
        "{result}"
    );
    assert_eq!(result["context"]["greetings"], 1, "{result}");
}

#[test]
fn a_new_typescript_project_builds_tests_and_runs_as_its_readme_says() {
    assert_greeted(&create_and_follow_readme("ts"));
}

#[test]
fn a_new_python_project_builds_tests_and_runs_as_its_readme_says() {
    assert_greeted(&create_and_follow_readme("py"));
}

#[test]
fn a_new_rust_project_builds_tests_and_runs_as_its_readme_says() {
    assert_greeted(&create_and_follow_readme("rust"));
}

#[test]
fn plugins_new_refuses_a_bad_name_and_a_used_directory() {
    let parent = tempfile::tempdir().unwrap();
    let new = |name: &str| {
        Command::new(env!("CARGO_BIN_EXE_flowcraft-host"))
            .args(["plugins", "new", name, "--lang", "ts"])
            .current_dir(parent.path())
            .output()
            .unwrap()
    };
    let bad = new("My_Nodes");
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        text(&bad.stderr).contains("bundle name 'My_Nodes': use lower-case letters"),
        "{}",
        text(&bad.stderr)
    );

    std::fs::create_dir(parent.path().join("taken")).unwrap();
    std::fs::write(parent.path().join("taken/notes.txt"), "mine").unwrap();
    let used = new("taken");
    assert_eq!(used.status.code(), Some(2));
    assert!(
        text(&used.stderr).contains("exists and is not empty"),
        "{}",
        text(&used.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(parent.path().join("taken/notes.txt")).unwrap(),
        "mine"
    );
}
