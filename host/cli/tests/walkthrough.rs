//! The README's "Writing nodes" walkthrough in Rust, run as it is written: its code
//! blocks are taken from `README.md` and run in a directory outside the
//! repository, from `cargo new` to a completed run of the new bundle. The
//! directory holds the crate beside a link named `flowcraft-host` to this
//! repository, as a clone would be, so the manifest's
//! `path = "../flowcraft-host/sdk"` works unchanged.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// One fenced code block: its language and its text, without the
/// indentation of the list item it stands in.
struct Block {
    language: String,
    text: String,
}

/// The code blocks of the README section `heading`, in order, up to the
/// next heading of level 2 or 3.
fn blocks_of_section(readme: &str, heading: &str) -> Vec<Block> {
    let section = readme
        .split_once(heading)
        .map(|(_, rest)| {
            let end = ["\n## ", "\n### "]
                .iter()
                .filter_map(|next| rest.find(next))
                .min()
                .unwrap_or(rest.len());
            &rest[..end]
        })
        .expect("the README has the section");
    let mut blocks = Vec::new();
    let mut open: Option<(usize, Block)> = None;
    for line in section.lines() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        match (&mut open, trimmed.strip_prefix("```")) {
            (None, Some(language)) => {
                let language = language.trim().to_owned();
                open = Some((
                    indent,
                    Block {
                        language,
                        text: String::new(),
                    },
                ));
            }
            (Some(_), Some(_)) => blocks.extend(open.take().map(|(_, block)| block)),
            (Some((indent, block)), None) => {
                block
                    .text
                    .push_str(line.get(*indent..).unwrap_or("").trim_end());
                block.text.push('\n');
            }
            (None, None) => {}
        }
    }
    blocks
}

/// Runs a shell block in `dir` with `flowcraft-host` on the `PATH`.
fn shell(block: &Block, dir: &Path) -> Output {
    assert_eq!(block.language, "sh", "{}", block.text);
    let binary = PathBuf::from(env!("CARGO_BIN_EXE_flowcraft-host"));
    let path = format!(
        "{}:{}",
        binary.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let output = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &block.text])
        .current_dir(dir)
        .env("PATH", path)
        .env("FLOWCRAFT_LOG", "warn")
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .expect("bash runs");
    assert!(
        output.status.success(),
        "{}\nstdout: {}\nstderr: {}",
        block.text,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

#[test]
fn the_writing_nodes_walkthrough_runs_as_written() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let blocks = blocks_of_section(&readme, "\n### Rust\n");
    let languages: Vec<&str> = blocks.iter().map(|b| b.language.as_str()).collect();
    assert_eq!(
        languages,
        ["sh", "toml", "rust", "rust", "sh", "sh"],
        "the walkthrough's steps changed"
    );
    let [
        new_crate,
        manifest,
        library,
        test,
        test_command,
        build_and_run,
    ] = blocks.as_slice()
    else {
        unreachable!("six blocks, checked above");
    };

    let outside = tempfile::tempdir().unwrap();
    let clone = outside.path().join("flowcraft-host");
    std::os::unix::fs::symlink(root().canonicalize().unwrap(), clone).unwrap();
    shell(new_crate, outside.path());
    let crate_dir = outside.path().join("my-nodes");
    std::fs::write(crate_dir.join("Cargo.toml"), &manifest.text).unwrap();
    std::fs::write(
        crate_dir.join("src/lib.rs"),
        format!("{}\n{}", library.text, test.text),
    )
    .unwrap();

    let tested = shell(test_command, &crate_dir);
    let summary = String::from_utf8_lossy(&tested.stdout);
    assert!(
        summary.contains("test large_orders_route_large ... ok"),
        "{summary}"
    );

    let ran = shell(build_and_run, &crate_dir);
    let last = String::from_utf8_lossy(&ran.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .to_owned();
    let result: Value = serde_json::from_str(&last).expect("the run prints one JSON object");
    assert_eq!(result["status"], "completed", "{result}");
    assert_eq!(result["context"]["_outputs.g"], "hello, Ada", "{result}");
}
