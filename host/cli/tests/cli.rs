//! The `flowcraft-host` binary as users call it: a real run of the demo, the
//! exit statuses, and one clear line on stderr for each kind of bad input.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn dist() -> PathBuf {
    let dist = root().join("plugins-example/dist");
    assert!(
        dist.join("orders.wasm").exists(),
        "{} is missing: run scripts/build-plugins.sh first",
        dist.join("orders.wasm").display()
    );
    dist
}

fn flowcraft(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flowcraft-host"))
        .args(args)
        .current_dir(root())
        .env("FLOWCRAFT_LOG", "warn")
        .output()
        .expect("the binary runs")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn write_temp(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("flowcraft-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn the_demo_workflow_completes_and_prints_one_json_object() {
    let dist = dist();
    let output = flowcraft(&[
        "run",
        "plugins-example/orders/blueprints/order-approval.json",
        "--plugins",
        dist.to_str().unwrap(),
        "--context",
        "@plugins-example/orders/blueprints/order-approval.context.json",
    ]);
    assert_eq!(output.status.code(), Some(0), "stderr: {}", stderr(&output));
    let result: Value = serde_json::from_slice(&output.stdout).expect("stdout is one JSON object");
    assert_eq!(result["status"], "completed");
    assert_eq!(result["errors"], Value::Array(vec![]));
    assert!(result["context"]["_outputs.route"].is_object());
    assert!(result["runId"].is_string());
}

#[test]
fn a_failed_run_exits_1() {
    let dist = dist();
    let blueprint = write_temp(
        "fails.json",
        r#"{"id":"fails","nodes":[{"id":"A","uses":"fail"}],"edges":[]}"#,
    );
    let output = flowcraft(&[
        "run",
        blueprint.to_str().unwrap(),
        "--plugins",
        dist.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(1));
    let result: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(result["status"], "failed");
    assert_eq!(result["errors"][0]["nodeId"], "A");
}

#[test]
fn awaiting_runs_are_saved_and_resumed_with_an_action() {
    let dist = dist();
    let dist = dist.to_str().unwrap();
    let blueprint = write_temp(
        "review.json",
        r#"{"id":"review","nodes":[{"id":"start","uses":"const","params":{"value":1}},{"id":"review","uses":"wait"},
            {"id":"yes","uses":"readResume"},{"id":"no","uses":"readResume"}],
            "edges":[{"source":"start","target":"review"},{"source":"review","target":"yes","action":"approve"},
                     {"source":"review","target":"no","action":"reject"}]}"#,
    );
    let state = blueprint.with_file_name("review.state.json");
    let output = flowcraft(&[
        "run",
        blueprint.to_str().unwrap(),
        "--plugins",
        dist,
        "--state",
        state.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(0), "stderr: {}", stderr(&output));
    let result: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(result["status"], "awaiting");
    let output = flowcraft(&[
        "resume",
        "--state",
        state.to_str().unwrap(),
        "--node",
        "review",
        "--action",
        "approve",
        "--output",
        r#"{"ok":true}"#,
        "--plugins",
        dist,
    ]);
    assert_eq!(output.status.code(), Some(0), "stderr: {}", stderr(&output));
    let result: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(result["status"], "completed");
    assert_eq!(result["context"]["_outputs.yes"]["action"], "approve");
    assert!(result["context"].get("_outputs.no").is_none());
    let graph = flowcraft(&[
        "graph",
        blueprint.to_str().unwrap(),
        "--state",
        state.to_str().unwrap(),
    ]);
    let chart = String::from_utf8_lossy(&graph.stdout);
    assert!(chart.starts_with("flowchart TD"));
    assert!(chart.contains("class n2 done"));
    assert!(chart.contains("class n3 skipped"));
}

/// A failed embedded run saved with `--state` is retried from its failed
/// node with a context fix; the node that completed is not run again.
#[test]
fn a_failed_saved_run_is_retried_from_its_failed_node() {
    let dist = dist();
    let dist = dist.to_str().unwrap();
    let blueprint = write_temp(
        "gated.json",
        r#"{"id":"gated","nodes":[{"id":"A","uses":"inc","params":{"limit":10}},
            {"id":"G","uses":"double","inputs":"amount"},{"id":"B","uses":"inc","params":{"limit":10}}],
            "edges":[{"source":"A","target":"G"},{"source":"G","target":"B"}]}"#,
    );
    let state = blueprint.with_file_name("gated.state.json");
    let state = state.to_str().unwrap();
    let output = flowcraft(&[
        "run",
        blueprint.to_str().unwrap(),
        "--plugins",
        dist,
        "--context",
        r#"{"amount":"oops"}"#,
        "--state",
        state,
    ]);
    assert_eq!(output.status.code(), Some(1), "stderr: {}", stderr(&output));
    let result: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(result["status"], "failed");
    assert_eq!(result["errors"][0]["nodeId"], "G");

    let retry = |context: &str| {
        flowcraft(&[
            "retry",
            "--state",
            state,
            "--context",
            context,
            "--plugins",
            dist,
        ])
    };
    let output = retry(r#"{"amount":21}"#);
    assert_eq!(output.status.code(), Some(0), "stderr: {}", stderr(&output));
    let result: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(result["status"], "completed");
    assert_eq!(result["errors"], Value::Array(vec![]));
    assert_eq!(result["context"]["_outputs.G"], 42);
    assert_eq!(result["context"]["count"], 2, "A ran once, B once");

    let output = retry("{}");
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("it is completed; only a failed run can be retried"),
        "{}",
        stderr(&output)
    );
}

/// Each bad input: exit status 2, a message naming the problem, no panic.
#[test]
fn bad_input_gets_one_clear_error_and_exit_status_2() {
    let dist = dist();
    let dist = dist.to_str().unwrap();
    let unknown_uses = write_temp(
        "unknown.json",
        r#"{"id":"u","nodes":[{"id":"A","uses":"nope"}],"edges":[]}"#,
    );
    let dangling = write_temp(
        "dangling.json",
        r#"{"id":"d","nodes":[{"id":"A","uses":"const"}],"edges":[{"source":"A","target":"Z"}]}"#,
    );
    let not_json = write_temp("broken.json", "{ this is not json");
    let good = "plugins-example/orders/blueprints/order-approval.json";
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["run", unknown_uses.to_str().unwrap(), "--plugins", dist],
            "unknown node type (uses) 'nope'",
        ),
        (
            vec!["run", dangling.to_str().unwrap(), "--plugins", dist],
            "target 'Z' is not a node",
        ),
        (
            vec!["run", not_json.to_str().unwrap(), "--plugins", dist],
            "is not a Flowcraft blueprint",
        ),
        (
            vec!["run", "no/such/file.json", "--plugins", dist],
            "cannot read blueprint file no/such/file.json",
        ),
        (
            vec!["run", good, "--plugins", dist, "--context", "{oops"],
            "--context: the argument is not valid JSON",
        ),
        (
            vec!["run", good, "--plugins", dist, "--context", "[1]"],
            "--context must be a JSON object",
        ),
        (
            vec!["run", good, "--plugins", "no/such/dir"],
            "cannot load plugins from no/such/dir",
        ),
        (
            vec!["validate", dangling.to_str().unwrap()],
            "target 'Z' is not a node",
        ),
    ];
    for (args, expected) in cases {
        let output = flowcraft(&args);
        let text = format!(
            "{}{}",
            stderr(&output),
            String::from_utf8_lossy(&output.stdout)
        );
        assert_eq!(output.status.code(), Some(2), "{args:?}: {text}");
        assert!(
            text.contains(expected),
            "{args:?}: expected {expected:?} in {text}"
        );
        assert!(!text.contains("panicked"), "{args:?}: {text}");
    }
}

/// The blueprints that once panicked a job or left a run `running` (each
/// passed `validate`): now one line from `validate`, exit 2, and `run`
/// refuses them the same way before anything runs.
#[test]
fn out_of_range_numbers_are_one_line_from_validate_and_run() {
    let dist = dist();
    let rows = [
        (
            r#"{"id":"t","nodes":[{"id":"A","uses":"const","config":{"timeout":1e300}}]}"#,
            "node 'A': config.timeout 1e+300 is out of range; allowed: milliseconds from 1 to 86400000",
        ),
        (
            r#"{"id":"t","nodes":[{"id":"A","uses":"fail","config":{"maxRetries":3,"retryDelay":1e308}}]}"#,
            "node 'A': config.retryDelay 1e+308 is out of range; allowed: milliseconds from 0 to 86400000",
        ),
        (
            r#"{"id":"t","nodes":[{"id":"A","uses":"sleep","params":{"duration":"99999999999d"}}]}"#,
            "node 'A': params.duration \"99999999999d\" is out of range",
        ),
    ];
    for (index, (blueprint, expected)) in rows.iter().enumerate() {
        let path = write_temp(&format!("range-{index}.json"), blueprint);
        let file = path.to_str().unwrap();
        let validated = flowcraft(&["validate", file, "--plugins", dist.to_str().unwrap()]);
        let stdout = String::from_utf8_lossy(&validated.stdout);
        assert_eq!(validated.status.code(), Some(2), "{stdout}");
        assert_eq!(stdout.lines().count(), 1, "{stdout}");
        assert!(
            stdout.contains(expected),
            "expected {expected:?} in {stdout}"
        );
        let ran = flowcraft(&["run", file, "--plugins", dist.to_str().unwrap()]);
        assert_eq!(ran.status.code(), Some(2), "{}", stderr(&ran));
        assert!(stderr(&ran).contains(expected), "{}", stderr(&ran));
    }
}

#[test]
fn validate_with_blueprints_finds_unknown_subflows_and_warns_of_cycles() {
    let dir = std::env::temp_dir().join(format!("flowcraft-cli-subflows-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let subflow = |id: &str, child: &str| {
        format!(
            r#"{{"id":"{id}","nodes":[{{"id":"s","uses":"subflow","params":{{"blueprintId":"{child}"}}}}]}}"#
        )
    };
    std::fs::write(dir.join("a.json"), subflow("a", "b")).unwrap();
    std::fs::write(dir.join("b.json"), subflow("b", "a")).unwrap();
    let missing = write_temp("calls-missing.json", &subflow("caller", "nowhere"));
    let output = flowcraft(&[
        "validate",
        dir.join("a.json").to_str().unwrap(),
        missing.to_str().unwrap(),
        "--blueprints",
        dir.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(2), "{stdout}");
    assert!(stdout.contains("a.json: ok"), "{stdout}");
    assert!(
        stdout.contains("node 's': params.blueprintId 'nowhere' is not a loaded blueprint"),
        "{stdout}"
    );
    assert!(
        stdout.contains("warning: blueprint 'a' runs itself through subflows (a → b → a)"),
        "{stdout}"
    );
}

/// A wait, resumed from its state file the way a new user tries it, with
/// the usual slips: each slip is answered with the way forward.
#[test]
fn resume_slips_are_answered_with_the_way_forward() {
    let dist = dist();
    let plugins = dist.to_str().unwrap();
    let blueprint = write_temp(
        "approval.json",
        r#"{"id":"approval-flow","nodes":[{"id":"approval","uses":"wait"}]}"#,
    );
    let blueprint = blueprint.to_str().unwrap();
    let state = write_temp("approval-state.json", "");
    let state = state.to_str().unwrap();
    let context_file = write_temp("ctx.json", r#"{"a":1}"#);

    let unsaved = flowcraft(&["run", blueprint, "--plugins", plugins]);
    assert_eq!(unsaved.status.code(), Some(0), "{}", stderr(&unsaved));
    assert!(
        stderr(&unsaved).contains(
            "is awaiting (nodes: approval); its state was not saved: run again with --state FILE"
        ),
        "{}",
        stderr(&unsaved)
    );
    let ran = flowcraft(&["run", blueprint, "--plugins", plugins, "--state", state]);
    assert_eq!(ran.status.code(), Some(0), "{}", stderr(&ran));
    let expected = format!(
        "is awaiting (nodes: approval); continue with: flowcraft-host resume --state {state} --node approval"
    );
    assert!(stderr(&ran).contains(&expected), "{}", stderr(&ran));

    let slips: [(Vec<&str>, String); 4] = [
        (
            vec!["resume", state],
            format!("{state} is a file: did you mean `resume --state {state}`?"),
        ),
        (
            vec!["resume", "--state", state, "--node", "aproval", "--plugins", plugins],
            "Cannot resume: Node 'aproval' is not in an awaiting state. Blueprint 'approval-flow' has no node 'aproval' (awaiting: approval)".into(),
        ),
        (
            vec!["resume", "--state", state, "--output", "approved", "--plugins", plugins],
            r#"--output: the argument is not valid JSON; to pass a string, quote it: '"approved"'"#.into(),
        ),
        (
            vec!["run", blueprint, "--plugins", plugins, "--context", context_file.to_str().unwrap()],
            format!("{} is a file: use @{}", context_file.display(), context_file.display()),
        ),
    ];
    for (args, expected) in slips {
        let output = flowcraft(&args);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            stderr(&output)
        );
        assert!(
            stderr(&output).contains(&expected),
            "{args:?}: {}",
            stderr(&output)
        );
    }

    let resumed = flowcraft(&[
        "resume",
        "--state",
        state,
        "--output",
        r#""ok""#,
        "--plugins",
        plugins,
    ]);
    assert_eq!(resumed.status.code(), Some(0), "{}", stderr(&resumed));
    let again = flowcraft(&["resume", "--state", state, "--plugins", plugins]);
    assert_eq!(again.status.code(), Some(2));
    assert!(
        stderr(&again)
            .contains("Cannot resume: The provided context is not in an awaiting state. Run '")
            && stderr(&again).contains("' is completed; only an awaiting run can be resumed"),
        "{}",
        stderr(&again)
    );
}

#[test]
fn validate_says_when_node_types_were_not_checked_and_logs_have_no_colour_off_a_terminal() {
    let blueprint = write_temp(
        "typo.json",
        r#"{"id":"typo","nodes":[{"id":"g","uses":"gret"}]}"#,
    );
    let output = Command::new(env!("CARGO_BIN_EXE_flowcraft-host"))
        .args(["validate", blueprint.to_str().unwrap()])
        .env_remove("FLOWCRAFT_PLUGINS")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0));
    assert!(
        stderr(&output).contains("note: node types were not checked: give the bundles with --plugins DIR (or FLOWCRAFT_PLUGINS)"),
        "{}",
        stderr(&output)
    );
    let checked = Command::new(env!("CARGO_BIN_EXE_flowcraft-host"))
        .args(["validate", blueprint.to_str().unwrap()])
        .env("FLOWCRAFT_PLUGINS", dist())
        .output()
        .unwrap();
    assert_eq!(checked.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&checked.stdout).contains("unknown node type (uses) 'gret'"));

    let logged = Command::new(env!("CARGO_BIN_EXE_flowcraft-host"))
        .args([
            "run",
            "plugins-example/orders/blueprints/order-approval.json",
            "--plugins",
        ])
        .arg(dist())
        .args([
            "--context",
            "@plugins-example/orders/blueprints/order-approval.context.json",
        ])
        .current_dir(root())
        .env_remove("NO_COLOR")
        .env_remove("FLOWCRAFT_LOG")
        .output()
        .unwrap();
    assert_eq!(logged.status.code(), Some(0), "{}", stderr(&logged));
    assert!(
        stderr(&logged).contains("node finished"),
        "{}",
        stderr(&logged)
    );
    assert!(
        !stderr(&logged).contains('\u{1b}'),
        "colour codes in piped logs"
    );
}

/// An action typo: `validate` lists the actions each node's edges expect,
/// and the run says on stderr that the node's action matched no edge.
/// A binding to a bundle version that is not loaded fails `validate` as it
/// fails `run`.
#[test]
fn validate_lists_expected_actions_and_checks_bindings() {
    let dist = dist();
    let plugins = dist.to_str().unwrap();
    let typo = write_temp(
        "typo-action.json",
        r#"{"id":"route","nodes":[{"id":"classify","uses":"act","params":{"value":1,"action":"large"}},
            {"id":"big","uses":"echo"},{"id":"small","uses":"echo"}],
           "edges":[{"source":"classify","target":"big","action":"lage"},
                    {"source":"classify","target":"small","action":"small"}]}"#,
    );
    let typo = typo.to_str().unwrap();
    let validated = flowcraft(&["validate", typo, "--plugins", plugins]);
    let stdout = String::from_utf8_lossy(&validated.stdout);
    assert_eq!(validated.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("ok; actions: classify → lage, small"),
        "{stdout}"
    );
    let ran = flowcraft(&["run", typo, "--plugins", plugins]);
    assert_eq!(ran.status.code(), Some(0), "{}", stderr(&ran));
    let warning = "node 'classify' returned action 'large', which matches none of its edges (they expect: lage, small) and it has no default edge: nothing follows it";
    assert!(stderr(&ran).contains(warning), "{}", stderr(&ran));
    let result: Value = serde_json::from_slice(&ran.stdout).unwrap();
    assert_eq!(result["warnings"][0]["nodeId"], "classify", "{result}");
    assert_eq!(result["warnings"][0]["message"], warning, "{result}");

    let pinned = write_temp(
        "pinned.json",
        r#"{"id":"pinned","metadata":{"plugins":{"conformance":"9.9.9"}},"nodes":[{"id":"a","uses":"echo"}]}"#,
    );
    let pinned = pinned.to_str().unwrap();
    let validated = flowcraft(&["validate", pinned, "--plugins", plugins]);
    let stdout = String::from_utf8_lossy(&validated.stdout);
    assert_eq!(validated.status.code(), Some(2), "{stdout}");
    assert!(
        stdout.contains("metadata.plugins: blueprint 'pinned':"),
        "{stdout}"
    );
    assert!(stdout.contains("9.9.9"), "{stdout}");
}

/// Each fact of an error is said once; a blueprint of built-in nodes runs
/// without `--plugins`.
#[test]
fn errors_say_each_fact_once_and_builtins_need_no_bundles() {
    let missing = flowcraft(&[
        "run",
        "plugins-example/orders/blueprints/order-approval.json",
        "--plugins",
        "no/such/dir",
    ]);
    assert_eq!(missing.status.code(), Some(2));
    assert_eq!(
        stderr(&missing)
            .matches("No such file or directory")
            .count(),
        1,
        "{}",
        stderr(&missing)
    );
    let not_a_blueprint = write_temp("not-a-blueprint.json", r#"{"a":1}"#);
    let validated = flowcraft(&["validate", not_a_blueprint.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&validated.stdout);
    assert_eq!(validated.status.code(), Some(2));
    assert_eq!(
        stdout.matches("not-a-blueprint.json").count(),
        1,
        "{stdout}"
    );
    assert!(stdout.contains("is not a Flowcraft blueprint"), "{stdout}");

    let builtins = write_temp(
        "builtins.json",
        r#"{"id":"nap","nodes":[{"id":"pause","uses":"sleep","params":{"duration":0}}]}"#,
    );
    let ran = Command::new(env!("CARGO_BIN_EXE_flowcraft-host"))
        .args(["run", builtins.to_str().unwrap()])
        .env_remove("FLOWCRAFT_PLUGINS")
        .env("FLOWCRAFT_LOG", "warn")
        .output()
        .unwrap();
    assert_eq!(ran.status.code(), Some(0), "{}", stderr(&ran));
    let result: Value = serde_json::from_slice(&ran.stdout).unwrap();
    assert_eq!(result["status"], "completed");
    let needs_bundles = flowcraft(&[
        "run",
        "plugins-example/orders/blueprints/order-approval.json",
    ]);
    assert_eq!(needs_bundles.status.code(), Some(2));
    assert!(
        stderr(&needs_bundles).contains("--plugins DIR|LIST is required"),
        "{}",
        stderr(&needs_bundles)
    );
}

/// The README's input forms, as the resolver reads them: a plain name is a
/// node's output, else the context key; a name starting with `_` is the
/// context key of exactly that name, never a path.
#[test]
fn inputs_resolve_as_the_readme_says() {
    let dist = dist();
    let blueprint = write_temp(
        "inputs.json",
        r#"{"id":"inputs","nodes":[{"id":"plain","uses":"echo","inputs":"items"},
            {"id":"underscore","uses":"echo","inputs":"_raw.items"},
            {"id":"exact","uses":"echo","inputs":"_items"}]}"#,
    );
    let output = flowcraft(&[
        "run",
        blueprint.to_str().unwrap(),
        "--plugins",
        dist.to_str().unwrap(),
        "--context",
        r#"{"items": [1, 2], "_items": [3]}"#,
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let result: Value = serde_json::from_slice(&output.stdout).unwrap();
    let context = &result["context"];
    assert_eq!(
        context["_outputs.plain"],
        serde_json::json!([1, 2]),
        "{result}"
    );
    assert_eq!(context["_outputs.underscore"], Value::Null, "{result}");
    assert_eq!(
        context["_outputs.exact"],
        serde_json::json!([3]),
        "{result}"
    );
}
