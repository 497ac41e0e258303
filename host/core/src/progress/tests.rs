//! Unit tests of the progress record's transitions.

use super::*;

fn setup(text: &str) -> (Blueprint, Analysis, RunProgress) {
    let blueprint = Blueprint::from_json(text).unwrap();
    let analysis = Analysis::of(&blueprint);
    let progress = RunProgress::new("r1", &blueprint.id, Pins::new(), DEFAULT_STEP_LIMIT);
    (blueprint, analysis, progress)
}

fn done(node: &str, taken: &[(&str, &str)]) -> Completion {
    Completion {
        sources: vec![node.to_owned()],
        taken: taken
            .iter()
            .map(|(s, t)| (s.to_string(), t.to_string()))
            .collect(),
        dynamic_nodes: vec![],
        gather: None,
        rearm: BTreeSet::new(),
        reopen: false,
        warning: None,
    }
}

const DIAMOND_WITH_CONDITION: &str = r#"{"id":"c13","nodes":[{"id":"A","uses":"x"},{"id":"B","uses":"x"},
    {"id":"C","uses":"x"},{"id":"D","uses":"x"}],
    "edges":[{"source":"A","target":"B","condition":"c"},{"source":"A","target":"C"},
             {"source":"B","target":"D"},{"source":"C","target":"D"}]}"#;

#[test]
fn a_skipped_predecessor_skips_an_all_join_and_the_run_completes() {
    let (bp, an, mut p) = setup(DIAMOND_WITH_CONDITION);
    assert_eq!(p.start(&an.start_nodes).schedule, vec!["A"]);
    let advance = p.complete(&bp, &an, "A", &done("A", &[("A", "C")]));
    assert_eq!(advance.schedule, vec!["C"]);
    assert_eq!(p.status("B"), NodeStatus::Skipped);
    let advance = p.complete(&bp, &an, "C", &done("C", &[("C", "D")]));
    assert!(advance.schedule.is_empty());
    assert_eq!(p.status("D"), NodeStatus::Skipped);
    assert_eq!(advance.new_state, Some(RunState::Completed));
}

#[test]
fn a_redelivered_completion_changes_nothing() {
    let (bp, an, mut p) = setup(DIAMOND_WITH_CONDITION);
    p.start(&an.start_nodes);
    p.complete(&bp, &an, "A", &done("A", &[("A", "B"), ("A", "C")]));
    let before = p.clone();
    let again = p.complete(&bp, &an, "A", &done("A", &[("A", "B"), ("A", "C")]));
    assert!(again.duplicate);
    assert!(again.schedule.is_empty());
    assert_eq!(p, before);
    p.complete(&bp, &an, "B", &done("B", &[("B", "D")]));
    let join = p.complete(&bp, &an, "C", &done("C", &[("C", "D")]));
    assert_eq!(join.schedule, vec!["D"]);
    let repeat = p.complete(&bp, &an, "C", &done("C", &[("C", "D")]));
    assert!(repeat.duplicate);
    assert!(repeat.schedule.is_empty(), "D is not scheduled twice");
    assert_eq!(p.steps, 4);
}

#[test]
fn an_any_join_runs_once_and_skips_only_when_all_are_skipped() {
    let (bp, an, mut p) = setup(
        r#"{"id":"b","nodes":[{"id":"A","uses":"x"},{"id":"B","uses":"x"},{"id":"C","uses":"x"},
           {"id":"J","uses":"x","config":{"joinStrategy":"any"}}],
           "edges":[{"source":"A","target":"J"},{"source":"B","target":"J"},{"source":"C","target":"J"}]}"#,
    );
    p.start(&an.start_nodes);
    assert_eq!(
        p.complete(&bp, &an, "A", &done("A", &[("A", "J")]))
            .schedule,
        vec!["J"]
    );
    assert!(
        p.complete(&bp, &an, "B", &done("B", &[("B", "J")]))
            .schedule
            .is_empty()
    );
    assert!(
        p.complete(&bp, &an, "C", &done("C", &[("C", "J")]))
            .schedule
            .is_empty()
    );
    let end = p.complete(&bp, &an, "J", &done("J", &[]));
    assert_eq!(end.new_state, Some(RunState::Completed));
    assert!(p.errors.is_empty());
}

#[test]
fn failure_is_sticky_and_stops_scheduling() {
    let (bp, an, mut p) = setup(
        r#"{"id":"b","nodes":[{"id":"A","uses":"x"},{"id":"B","uses":"x"},{"id":"C","uses":"x"}],
           "edges":[{"source":"B","target":"C"}]}"#,
    );
    p.start(&an.start_nodes);
    assert_eq!(p.fail("A", "boom").new_state, Some(RunState::Failed));
    let late = p.complete(&bp, &an, "B", &done("B", &[("B", "C")]));
    assert!(late.schedule.is_empty());
    assert_eq!(late.new_state, None);
    assert_eq!(p.state, RunState::Failed);
}

#[test]
fn the_step_limit_fails_the_run() {
    let (bp, an, mut p) = setup(
        r#"{"id":"b","nodes":[{"id":"A","uses":"x"},{"id":"B","uses":"x"}],"edges":[{"source":"A","target":"B"}]}"#,
    );
    p.step_limit = 1;
    p.start(&an.start_nodes);
    let advance = p.complete(&bp, &an, "A", &done("A", &[("A", "B")]));
    assert_eq!(advance.new_state, Some(RunState::Failed));
    assert!(p.errors[0].message.contains("maximum iterations"));
}

/// S → {A, B}; A → C; B → C; S → P. A fails while B and P are scheduled.
const RETRY_GRAPH: &str = r#"{"id":"r","nodes":[{"id":"S","uses":"x"},{"id":"A","uses":"x"},
    {"id":"B","uses":"x"},{"id":"C","uses":"x"},{"id":"P","uses":"x"}],
    "edges":[{"source":"S","target":"A"},{"source":"S","target":"B"},{"source":"S","target":"P"},
             {"source":"A","target":"C"},{"source":"B","target":"C"}]}"#;

fn failed_retry_graph() -> (Blueprint, Analysis, RunProgress) {
    let (bp, an, mut p) = setup(RETRY_GRAPH);
    p.start(&an.start_nodes);
    let after_s = p.complete(
        &bp,
        &an,
        "S",
        &done("S", &[("S", "A"), ("S", "B"), ("S", "P")]),
    );
    assert_eq!(after_s.schedule, vec!["A", "B", "P"]);
    assert_eq!(p.fail("A", "boom").new_state, Some(RunState::Failed));
    // B was running and finishes after the failure: frozen, not routed.
    let late = p.complete(&bp, &an, "B", &done("B", &[("B", "C")]));
    assert!(late.schedule.is_empty() && late.new_state.is_none());
    assert_eq!(p.status("B"), NodeStatus::Scheduled);
    // P's job arrives after the failure and is dropped: P stays scheduled.
    (bp, an, p)
}

#[test]
fn retry_reschedules_exactly_the_unfinished_nodes() {
    let (bp, an, mut p) = failed_retry_graph();
    let steps_before = p.steps;
    let settled_before = p.settled;
    let advance = p.retry().expect("a failed run can be retried");
    assert_eq!(advance.schedule, vec!["A", "B", "P"]);
    assert_eq!(advance.new_state, Some(RunState::Running));
    assert_eq!(p.state, RunState::Running);
    assert_eq!(p.status("S"), NodeStatus::Done, "S is not run again");
    assert_eq!(p.status("C"), NodeStatus::Waiting);
    assert!(p.errors.is_empty());
    assert_eq!(p.retried_errors.len(), 1);
    assert_eq!(p.retried_errors[0].node_id, "A");
    assert_eq!(p.retries, 1);
    assert_eq!(p.steps, 3, "a fresh step budget ({steps_before} before)");
    assert!(p.settled > settled_before, "remembered contexts are stale");

    assert!(
        p.complete(&bp, &an, "B", &done("B", &[("B", "C")]))
            .schedule
            .is_empty()
    );
    assert!(
        p.complete(&bp, &an, "P", &done("P", &[]))
            .schedule
            .is_empty()
    );
    assert_eq!(
        p.complete(&bp, &an, "A", &done("A", &[("A", "C")]))
            .schedule,
        vec!["C"]
    );
    let end = p.complete(&bp, &an, "C", &done("C", &[]));
    assert_eq!(end.new_state, Some(RunState::Completed));
    assert!(p.errors.is_empty());
}

#[test]
fn a_run_that_fails_again_can_be_retried_again() {
    let (_, _, mut p) = failed_retry_graph();
    p.retry().unwrap();
    assert_eq!(p.fail("A", "boom again").new_state, Some(RunState::Failed));
    assert_eq!(p.errors.len(), 1, "errors are those of the current attempt");
    assert_eq!(p.errors[0].message, "boom again");
    // B and P had not settled yet either.
    assert_eq!(p.retry().unwrap().schedule, vec!["A", "B", "P"]);
    assert_eq!(p.retries, 2);
    assert_eq!(p.retried_errors.len(), 2);
}

#[test]
fn only_a_failed_run_can_be_retried() {
    let (bp, an, mut p) = setup(RETRY_GRAPH);
    p.start(&an.start_nodes);
    let unchanged = p.clone();
    assert_eq!(p.retry(), Err(RunState::Running));
    assert_eq!(p, unchanged);

    let (_, _, mut cancelled) = setup(RETRY_GRAPH);
    cancelled.start(&an.start_nodes);
    cancelled.cancel();
    assert_eq!(cancelled.retry(), Err(RunState::Cancelled));

    let (wbp, wan, mut waiting) =
        setup(r#"{"id":"w","nodes":[{"id":"W","uses":"wait"}],"edges":[]}"#);
    waiting.start(&wan.start_nodes);
    waiting.pause("W", AwaitReason::ExternalEvent);
    assert_eq!(waiting.retry(), Err(RunState::Awaiting));
    waiting.unpause("W");
    waiting.complete(&wbp, &wan, "W", &done("W", &[]));
    assert_eq!(waiting.state, RunState::Completed);
    assert_eq!(waiting.retry(), Err(RunState::Completed));

    let _ = bp;
}

#[test]
fn of_two_retries_of_one_failed_record_the_second_loses() {
    // The coordination store applies transitions one at a time on the
    // current record (compare-and-set): the second retry sees the first.
    let (_, _, mut p) = failed_retry_graph();
    assert!(p.retry().is_ok());
    let after_first = p.clone();
    assert_eq!(p.retry(), Err(RunState::Running));
    assert_eq!(p, after_first, "the losing retry changes nothing");
}

#[test]
fn a_fallback_after_the_failure_waits_for_the_retry() {
    let (bp, an, mut p) = setup(
        r#"{"id":"f","nodes":[{"id":"A","uses":"x"},{"id":"N","uses":"x","config":{"fallback":"F"}},
           {"id":"F","uses":"x"},{"id":"M","uses":"x"}],
           "edges":[{"source":"N","target":"M"}]}"#,
    );
    assert_eq!(p.start(&an.start_nodes).schedule, vec!["A", "N"]);
    p.fail("A", "boom");
    let handover = p.fall_back("N", "F", "boom");
    assert!(handover.schedule.is_empty(), "nothing runs in a failed run");
    assert_eq!(p.status("N"), NodeStatus::Done);
    assert_eq!(p.status("F"), NodeStatus::Scheduled);
    assert_eq!(p.retry().unwrap().schedule, vec!["A", "F"]);
    // F stands in for N: its completion routes N's edge to M.
    let routed = p.complete(
        &bp,
        &an,
        "F",
        &Completion {
            sources: vec!["F".into(), "N".into()],
            ..done("F", &[("N", "M")])
        },
    );
    assert_eq!(routed.schedule, vec!["M"]);
}

#[test]
fn a_step_limit_failure_is_retried_with_a_fresh_budget() {
    let (bp, an, mut p) = setup(
        r#"{"id":"b","nodes":[{"id":"A","uses":"x"},{"id":"B","uses":"x"}],"edges":[{"source":"A","target":"B"}]}"#,
    );
    p.step_limit = 1;
    p.start(&an.start_nodes);
    p.complete(&bp, &an, "A", &done("A", &[("A", "B")]));
    assert_eq!(p.state, RunState::Failed);
    assert_eq!(p.retry().unwrap().schedule, vec!["B"]);
    assert_eq!(p.status("A"), NodeStatus::Done);
    let end = p.complete(&bp, &an, "B", &done("B", &[]));
    assert_eq!(end.new_state, Some(RunState::Completed));
}

#[test]
fn pause_then_unpause_and_complete() {
    let (bp, an, mut p) = setup(
        r#"{"id":"b","nodes":[{"id":"W","uses":"wait"},{"id":"B","uses":"x"}],"edges":[{"source":"W","target":"B"}]}"#,
    );
    p.start(&an.start_nodes);
    let paused = p.pause("W", AwaitReason::ExternalEvent);
    assert_eq!(paused.new_state, Some(RunState::Awaiting));
    assert!(p.unpause("W"));
    assert!(!p.unpause("W"));
    assert_eq!(
        p.complete(&bp, &an, "W", &done("W", &[("W", "B")]))
            .schedule,
        vec!["B"]
    );
}

#[test]
fn times_mark_when_nodes_were_scheduled_and_when_they_stopped_being() {
    let (bp, an, mut p) = setup(DIAMOND_WITH_CONDITION);
    let started = p.start(&an.start_nodes);
    p.stamp_times(&BTreeSet::new(), &started, 100);
    let was_scheduled = p.pending.clone();
    let advance = p.complete(&bp, &an, "A", &done("A", &[("A", "B"), ("A", "C")]));
    p.stamp_times(&was_scheduled, &advance, 250);
    assert_eq!(times(&p, "A"), (Some(100), Some(250)));
    assert_eq!(times(&p, "B"), (Some(250), None));
    assert_eq!(times(&p, "C"), (Some(250), None));

    // A duplicate settlement moves no time.
    let was_scheduled = p.pending.clone();
    let again = p.complete(&bp, &an, "A", &done("A", &[("A", "B"), ("A", "C")]));
    p.stamp_times(&was_scheduled, &again, 999);
    assert_eq!(times(&p, "A"), (Some(100), Some(250)));
    assert_eq!(times(&p, "B"), (Some(250), None));
}

fn times(progress: &RunProgress, node: &str) -> (Option<i64>, Option<i64>) {
    let node = &progress.nodes[node];
    (node.started_at, node.finished_at)
}
