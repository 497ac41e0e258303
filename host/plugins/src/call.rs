//! One sandboxed call: a fresh store and instance from the bundle's
//! `InstancePre`, the time and memory limits, and the translation of whatever
//! happens into a [`NodeOutcome`].
//!
//! | what happened | [`FailureKind`] |
//! |---|---|
//! | guest returned `retryable` / `fatal` / `invalid-input` | `Retryable` / `Fatal` / `InvalidInput` (guest message kept, control characters escaped, cut to [`MAX_GUEST_MESSAGE_BYTES`]) |
//! | CPU or wall-clock time limit | `Retryable` |
//! | memory limit, trap, panic | `Retryable` |
//! | result (output, action and dynamic nodes) over `max_output_bytes`, more than [`MAX_DYNAMIC_NODES_PER_CALL`] dynamic nodes, output or a dynamic node nested deeper than [`MAX_JSON_DEPTH`](flowcraft_core::limits::MAX_JSON_DEPTH), not JSON, invalid dynamic node | `Fatal` |
//! | broke a host rule that traps (`context-delete` of a reserved key / over quota) | `Fatal` |
//!
//! Host-side failures name the bundle (`name@version`), the node type and the
//! cause; the guest's captured stderr (its panic message) is attached. Limits
//! are checked on the text before anything is parsed. After the call, one
//! warning reports the log records the call's budgets dropped.

use std::time::{Duration, Instant};

use flowcraft_core::blueprint::NodeDefinition;
use flowcraft_core::limits::{MAX_DYNAMIC_NODES_PER_CALL, check_json_depth};
use flowcraft_core::runner::{FailureKind, NodeCall, NodeFailure, NodeOutcome, NodeSuccess};
use flowcraft_core::telemetry::{self, TrapKind};
use serde_json::Value;
use tracing::Instrument;
use wasmtime::{Store, Trap, UpdateDeadline};

use crate::bindings::{GuestNodeError, GuestNodeResult, GuestRequest};
use crate::bundle::Bundle;
use crate::capture::CAPTURE_BYTES;
use crate::engine::{EPOCH_TICK, Runtime};
use crate::error::chain;
use crate::guest_log::{CallLog, GUEST_TARGET, escape};
use crate::sandbox::{
    CallLabels, CallState, HostRuleBroken, MemoryLimitExceeded, TimeLimitExceeded,
};

/// Extra wall-clock time before a call is cancelled, so that a guest that is
/// computing is stopped by its epoch callback (with the precise "CPU time"
/// message) and only a guest waiting on the host is cancelled by the timer.
const CANCEL_GRACE: Duration = Duration::from_millis(2 * EPOCH_TICK.as_millis() as u64);

/// How many characters of offending guest text an error message quotes.
const QUOTE_CHARS: usize = 120;

/// Bytes of a failure message the guest returns; the rest is cut.
pub(crate) const MAX_GUEST_MESSAGE_BYTES: usize = 4 << 10;

/// Runs one attempt of `call` on `bundle`.
pub(crate) async fn execute(runtime: &Runtime, bundle: &Bundle, call: NodeCall) -> NodeOutcome {
    // Short calls never yield to tokio on their own; spend coop budget so a
    // worker looping over calls still lets timers and I/O run.
    tokio::task::consume_budget().await;

    // A slot of the instance pool, held until the store (and its instance)
    // is gone; the semaphore is never closed.
    let Ok(slot) = runtime.slots.acquire().await else {
        return NodeOutcome {
            result: Err(NodeFailure::retryable(format!(
                "bundle {}, node type '{}': the plugin runtime is shutting down",
                bundle.label, call.uses
            ))),
            context: call.context,
        };
    };

    let time_limit = call.timeout.unwrap_or(runtime.limits.default_timeout);
    let request = GuestRequest {
        uses: call.uses.clone(),
        run_id: call.run_id.clone(),
        node_id: call.node_id.clone(),
        blueprint_id: call.blueprint_id,
        attempt: call.attempt,
        input: call.input.as_ref().map(|input| input.json().to_owned()),
        params: call.params.to_string(),
    };
    let labels = CallLabels {
        bundle: bundle.label.clone(),
        uses: call.uses,
        run_id: call.run_id,
        node_id: call.node_id,
    };
    let log = CallLog::for_run(runtime.run_logs.clone(), &labels.run_id);
    let state = CallState::new(
        call.context,
        bundle.grants.clone(),
        bundle.http.clone(),
        labels,
        log,
        runtime.limits.memory_limit,
        time_limit,
    );
    let mut store = new_store(runtime, state);
    let started = Instant::now();
    let call = async {
        let instance = bundle.pre.instantiate_async(&mut store).await?;
        telemetry::plugin_instantiated(&bundle.label);
        instance
            .flowcraft_node_node()
            .call_execute(&mut store, &request)
            .await
    };
    let span = telemetry::call_span(&request.uses, &bundle.label, &bundle.info.digest);
    let outcome = tokio::time::timeout(time_limit + CANCEL_GRACE, call)
        .instrument(span)
        .await;
    let state = store.into_data();
    drop(slot);
    telemetry::node_finished(&state.labels.uses, &bundle.label, started.elapsed());

    log_captured_output(&state);
    state.log.report_dropped(&state.labels);
    let result = match outcome {
        Err(_elapsed) => {
            telemetry::plugin_trapped(TrapKind::TimeLimit);
            Err(NodeFailure::retryable(format!(
                "{}: time limit of {} ms exceeded",
                prefix(&state),
                time_limit.as_millis()
            )))
        }
        Ok(Err(error)) => Err(trap_failure(&error, &state)),
        // A host rule the node broke fails the call whatever it answered.
        Ok(Ok(_)) if let Some(fault) = &state.fault => {
            telemetry::plugin_trapped(TrapKind::HostRule);
            Err(NodeFailure::fatal(format!("{}: {fault}", prefix(&state))))
        }
        Ok(Ok(Err(guest_error))) => Err(guest_failure(guest_error)),
        Ok(Ok(Ok(result))) => success(result, runtime.limits.max_output_bytes, &state),
    };
    NodeOutcome {
        context: state.context,
        result,
    }
}

/// A store for one call (or one `describe`), with the memory limiter and the
/// epoch callback that yields every tick and traps past the time limit.
pub(crate) fn new_store(runtime: &Runtime, state: CallState) -> Store<CallState> {
    let mut store = Store::new(&runtime.engine, state);
    store.limiter(|state| &mut state.memory);
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(|mut context| {
        let state = context.data_mut();
        if state.started.elapsed() >= state.time_limit {
            state.time_limit_hit = true;
            return Err(wasmtime::Error::new(TimeLimitExceeded {
                limit: state.time_limit,
            }));
        }
        Ok(UpdateDeadline::YieldCustom(
            1,
            Box::pin(tokio::task::yield_now()),
        ))
    });
    store
}

/// `bundle name@version, node type 'uses'`: how host-side failures begin.
pub(crate) fn prefix(state: &CallState) -> String {
    format!(
        "bundle {}, node type '{}'",
        state.labels.bundle, state.labels.uses
    )
}

/// The failure for a call that trapped or could not run, counted by kind.
pub(crate) fn trap_failure(error: &wasmtime::Error, state: &CallState) -> NodeFailure {
    let (kind, failure) = classify_trap(error, state);
    telemetry::plugin_trapped(kind);
    failure
}

fn classify_trap(error: &wasmtime::Error, state: &CallState) -> (TrapKind, NodeFailure) {
    let prefix = prefix(state);
    if let Some(limit) = error.downcast_ref::<TimeLimitExceeded>() {
        return (
            TrapKind::TimeLimit,
            NodeFailure::retryable(format!("{prefix}: {limit}")),
        );
    }
    if state.time_limit_hit {
        let limit = TimeLimitExceeded {
            limit: state.time_limit,
        };
        return (
            TrapKind::TimeLimit,
            NodeFailure::retryable(format!("{prefix}: {limit}")),
        );
    }
    if let Some(limit) = error.downcast_ref::<MemoryLimitExceeded>() {
        return (
            TrapKind::MemoryLimit,
            NodeFailure::retryable(format!("{prefix}: {limit}")),
        );
    }
    if let Some(rule) = error.downcast_ref::<HostRuleBroken>() {
        return (
            TrapKind::HostRule,
            NodeFailure::fatal(format!("{prefix}: {rule}")),
        );
    }
    if let Some(fault) = &state.fault {
        return (
            TrapKind::HostRule,
            NodeFailure::fatal(format!("{prefix}: {fault}")),
        );
    }
    let stderr = state.stderr.text();
    if let Some(panic) = panic_message(&stderr) {
        return (
            TrapKind::Panic,
            NodeFailure::retryable(format!("{prefix}: the node panicked: {panic}")),
        );
    }
    let stderr_note = if stderr.is_empty() {
        String::new()
    } else {
        format!("; guest stderr: {}", one_line(&stderr))
    };
    match error.downcast_ref::<Trap>() {
        Some(trap) => (
            TrapKind::Trap,
            NodeFailure::retryable(format!("{prefix}: the node trapped: {trap}{stderr_note}")),
        ),
        None => (
            TrapKind::CallFailed,
            NodeFailure::retryable(format!(
                "{prefix}: the call failed: {}{stderr_note}",
                chain(error)
            )),
        ),
    }
}

/// A failure the guest reported itself: its message is kept, escaped like
/// its log records (it reaches the host's log) and cut to
/// [`MAX_GUEST_MESSAGE_BYTES`].
fn guest_failure(error: GuestNodeError) -> NodeFailure {
    let (kind, message) = match error {
        GuestNodeError::Retryable(message) => (FailureKind::Retryable, message),
        GuestNodeError::Fatal(message) => (FailureKind::Fatal, message),
        GuestNodeError::InvalidInput(message) => (FailureKind::InvalidInput, message),
    };
    NodeFailure {
        kind,
        message: escape(&message, MAX_GUEST_MESSAGE_BYTES),
    }
}

/// Checks a guest's result against the limits, then parses it.
fn success(
    result: GuestNodeResult,
    max_output_bytes: usize,
    state: &CallState,
) -> Result<NodeSuccess, NodeFailure> {
    let fatal = |reason: String| NodeFailure::fatal(format!("{}: {reason}", prefix(state)));
    let count = result.dynamic_nodes.len();
    if count > MAX_DYNAMIC_NODES_PER_CALL {
        return Err(fatal(format!(
            "the result has {count} dynamic nodes, more than the limit of \
             {MAX_DYNAMIC_NODES_PER_CALL} per node call"
        )));
    }
    let size = result.output.as_ref().map_or(0, String::len)
        + result.action.as_ref().map_or(0, String::len)
        + result.dynamic_nodes.iter().map(String::len).sum::<usize>();
    if size > max_output_bytes {
        return Err(fatal(format!(
            "the result (output, action and dynamic nodes) is {size} bytes, more than the limit \
             of {max_output_bytes} bytes (max_output_bytes)"
        )));
    }
    let output = match result.output {
        None => None,
        Some(text) => {
            check_json_depth("the output", &text).map_err(|e| fatal(e.to_string()))?;
            Some(serde_json::from_str::<Value>(&text).map_err(|error| {
                fatal(format!(
                    "the output is not valid JSON ({error}): {}",
                    quote(&text)
                ))
            })?)
        }
    };
    let dynamic_nodes = result
        .dynamic_nodes
        .iter()
        .enumerate()
        .map(|(index, text)| {
            check_json_depth(&format!("dynamic node #{index}"), text)
                .map_err(|e| fatal(e.to_string()))?;
            serde_json::from_str::<NodeDefinition>(text).map_err(|error| {
                fatal(format!(
                    "dynamic node #{index} is not a valid node definition ({error}): {}",
                    quote(text)
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(NodeSuccess {
        output,
        action: result.action,
        dynamic_nodes,
    })
}

/// The message of a Rust panic printed by the guest's default panic hook.
fn panic_message(stderr: &str) -> Option<String> {
    let start = stderr.rfind("panicked at ")?;
    let report = &stderr[start + "panicked at ".len()..];
    let report = report.split("\nnote: ").next().unwrap_or(report);
    let (location, message) = report.split_once('\n').unwrap_or((report, ""));
    let location = location.trim_end_matches(':');
    let message = one_line(message);
    Some(if message.is_empty() {
        format!("at {location}")
    } else {
        format!("{message} (at {location})")
    })
}

/// Guest text on one line, escaped and bounded like a guest's message.
fn one_line(text: &str) -> String {
    escape(
        &text.split_whitespace().collect::<Vec<_>>().join(" "),
        MAX_GUEST_MESSAGE_BYTES,
    )
}

fn quote(text: &str) -> String {
    let mut quoted: String = text.chars().take(QUOTE_CHARS).collect();
    if quoted.len() < text.len() {
        quoted.push('…');
    }
    format!("{quoted:?}")
}

/// Logs what the guest printed (the kept tail of each stream, escaped like
/// its log records).
fn log_captured_output(state: &CallState) {
    for (stream, pipe) in [("stdout", &state.stdout), ("stderr", &state.stderr)] {
        let text = pipe.text();
        if !text.is_empty() {
            let text = escape(&text, CAPTURE_BYTES);
            tracing::debug!(
                target: GUEST_TARGET,
                bundle = %state.labels.bundle,
                node_type = %state.labels.uses,
                run_id = %state.labels.run_id,
                node_id = %state.labels.node_id,
                stream,
                "{text}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extracts_rust_panic_messages() {
        let stderr = "\nthread '<unnamed>' panicked at src/lib.rs:10:5:\nhostile panic\nnote: run with `RUST_BACKTRACE=1` environment variable to display a backtrace";
        assert_eq!(
            panic_message(stderr).unwrap(),
            "hostile panic (at src/lib.rs:10:5)"
        );
        assert_eq!(panic_message("just output"), None);
    }

    #[test]
    fn guest_messages_are_escaped_and_cut() {
        let message = "é".repeat(MAX_GUEST_MESSAGE_BYTES);
        let failure = guest_failure(GuestNodeError::Fatal(message));
        assert_eq!(failure.kind, FailureKind::Fatal);
        let (kept, note) = failure.message.split_once(" … ").unwrap();
        assert_eq!(kept.len(), MAX_GUEST_MESSAGE_BYTES);
        assert_eq!(
            note,
            format!("[{} more bytes cut]", MAX_GUEST_MESSAGE_BYTES)
        );
        let short = guest_failure(GuestNodeError::Retryable("try again".into()));
        assert_eq!(short.message, "try again");
        let forged = guest_failure(GuestNodeError::Fatal(
            "no\n2025 INFO run finished\u{1b}[2J".into(),
        ));
        assert_eq!(forged.message, "no\\n2025 INFO run finished\\u{1b}[2J");
    }

    #[test]
    fn quotes_are_bounded() {
        let long = "x".repeat(1000);
        assert!(quote(&long).chars().count() < 130);
    }
}
