//! What the host counts and times, for its metrics endpoint: every metric's
//! name, help text and labels in one place, and a function per event that
//! records it, so that the crates recording the same metric agree on it.
//!
//! Recording goes through the `metrics` facade. Without an installed
//! recorder (the embedded `run`, most tests) a call costs one atomic load
//! and records nothing; `flowcraft-telemetry` installs the Prometheus one.
//!
//! Label values come from bounded sets only: outcomes and kinds are enums
//! here, `uses`, `bundle` and `blueprint` name what is loaded, `service` and
//! `operation` are fixed strings of the backends. Run and node ids never
//! become labels.

use std::future::Future;
use std::time::Duration;

use metrics::{
    Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};
use tracing::Instrument;

use crate::progress::RunState;

/// Jobs handled by the worker, by `outcome` ([`JobOutcome`]).
pub const JOBS: &str = "flowcraft_jobs_total";
/// How long a node attempt ran, by `uses` and `bundle`.
pub const NODE_DURATION: &str = "flowcraft_node_duration_seconds";
/// Runs started, by `blueprint`.
pub const RUNS_STARTED: &str = "flowcraft_runs_started_total";
/// Runs that reached a terminal state, by `blueprint` and `status`.
pub const RUNS_FINISHED: &str = "flowcraft_runs_finished_total";
/// From a run's start to its terminal state, by `blueprint`.
pub const RUN_DURATION: &str = "flowcraft_run_duration_seconds";
/// How long one receive from the job queue took.
pub const QUEUE_RECEIVE_DURATION: &str = "flowcraft_queue_receive_duration_seconds";
/// Messages received from the job queue.
pub const QUEUE_MESSAGES_RECEIVED: &str = "flowcraft_queue_messages_received_total";
/// Messages this worker holds (received, not yet deleted or given back).
pub const MESSAGES_IN_FLIGHT: &str = "flowcraft_messages_in_flight";
/// Requests to a backend service, by `service` and `operation`.
pub const BACKEND_REQUESTS: &str = "flowcraft_backend_requests_total";
/// Requests that failed after their retries, by `service` and `operation`.
pub const BACKEND_ERRORS: &str = "flowcraft_backend_errors_total";
/// How long a request took, retries included, by `service` and `operation`.
pub const BACKEND_REQUEST_DURATION: &str = "flowcraft_backend_request_duration_seconds";
/// Instances made of a bundle's component, by `bundle`.
pub const PLUGIN_INSTANTIATIONS: &str = "flowcraft_plugin_instantiations_total";
/// Calls stopped by the sandbox, by `kind` ([`TrapKind`]).
pub const PLUGIN_TRAPS: &str = "flowcraft_plugin_traps_total";
/// Bundle loads, by `result`: `hit` (compiled code from the cache) or `miss`.
pub const COMPILE_CACHE: &str = "flowcraft_plugin_compile_cache_total";
/// Messages or jobs moved to the poison (dead-letter) queue.
pub const POISON_MESSAGES: &str = "flowcraft_poison_messages_total";
/// Reconciler passes, by `result` (`ok` or `failed`).
pub const RECONCILER_PASSES: &str = "flowcraft_reconciler_passes_total";
/// Runs the reconciler got moving again (jobs re-sent or state repaired).
pub const RECONCILER_RUNS_RESENT: &str = "flowcraft_reconciler_runs_resent_total";

/// The `bundle` label of built-in node types.
pub const BUILTIN_BUNDLE: &str = "builtin";

/// Histogram bucket bounds in seconds, per histogram: a node or a backend
/// request takes milliseconds, a run up to days (it may wait for a person).
pub const BUCKETS: [(&str, &[f64]); 4] = [
    (NODE_DURATION, &FAST_BUCKETS),
    (QUEUE_RECEIVE_DURATION, &FAST_BUCKETS),
    (BACKEND_REQUEST_DURATION, &FAST_BUCKETS),
    (RUN_DURATION, &RUN_BUCKETS),
];

const FAST_BUCKETS: [f64; 14] = [
    0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0,
];
const RUN_BUCKETS: [f64; 12] = [
    0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 60.0, 300.0, 3_600.0, 86_400.0, 604_800.0,
];

/// What became of one job a worker took from its message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobOutcome {
    /// The engine handled it (the node ran, paused or failed, or the job
    /// was a duplicate).
    Handled,
    /// A backend failed; the message is left to reappear.
    BackendError,
    /// Given back to the queue after a delay (another worker may take it).
    Returned,
    /// Moved to the poison queue.
    DeadLettered,
    /// Its run was cancelled while it ran.
    Cancelled,
}

impl JobOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Handled => "handled",
            Self::BackendError => "backend_error",
            Self::Returned => "returned",
            Self::DeadLettered => "dead_lettered",
            Self::Cancelled => "cancelled",
        }
    }
}

/// Why the sandbox stopped a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrapKind {
    TimeLimit,
    MemoryLimit,
    /// The node broke a host rule (a reserved key, a quota).
    HostRule,
    /// The guest panicked.
    Panic,
    /// Any other WebAssembly trap (unreachable, out-of-bounds access, …).
    Trap,
    /// The call could not run (instantiation failed, say).
    CallFailed,
}

impl TrapKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TimeLimit => "time_limit",
            Self::MemoryLimit => "memory_limit",
            Self::HostRule => "host_rule",
            Self::Panic => "panic",
            Self::Trap => "trap",
            Self::CallFailed => "call_failed",
        }
    }
}

/// Registers every metric's help text and unit with the installed recorder.
pub fn describe() {
    describe_counter!(JOBS, "Jobs handled by this worker, by outcome.");
    describe_histogram!(
        NODE_DURATION,
        Unit::Seconds,
        "Duration of node attempts, by node type and bundle."
    );
    describe_counter!(RUNS_STARTED, "Runs started, by blueprint.");
    describe_counter!(
        RUNS_FINISHED,
        "Runs that reached a terminal status, by blueprint and status."
    );
    describe_histogram!(
        RUN_DURATION,
        Unit::Seconds,
        "Duration of runs from start to terminal status, by blueprint."
    );
    describe_histogram!(
        QUEUE_RECEIVE_DURATION,
        Unit::Seconds,
        "Duration of receives from the job queue."
    );
    describe_counter!(
        QUEUE_MESSAGES_RECEIVED,
        "Messages received from the job queue."
    );
    describe_gauge!(
        MESSAGES_IN_FLIGHT,
        "Messages this worker holds: received and not yet deleted or given back."
    );
    describe_counter!(
        BACKEND_REQUESTS,
        "Requests to backend services, by service and operation."
    );
    describe_counter!(
        BACKEND_ERRORS,
        "Backend requests that failed after their retries, by service and operation."
    );
    describe_histogram!(
        BACKEND_REQUEST_DURATION,
        Unit::Seconds,
        "Duration of backend requests, retries included, by service and operation."
    );
    describe_counter!(
        PLUGIN_INSTANTIATIONS,
        "Instances made of bundle components, by bundle."
    );
    describe_counter!(PLUGIN_TRAPS, "Node calls the sandbox stopped, by kind.");
    describe_counter!(
        COMPILE_CACHE,
        "Bundle loads by compile-cache result (hit or miss)."
    );
    describe_counter!(
        POISON_MESSAGES,
        "Messages or jobs moved to the poison queue."
    );
    describe_counter!(RECONCILER_PASSES, "Reconciler passes, by result.");
    describe_counter!(
        RECONCILER_RUNS_RESENT,
        "Stalled runs the reconciler got moving again."
    );
}

pub fn job_handled(outcome: JobOutcome) {
    counter!(JOBS, "outcome" => outcome.as_str()).increment(1);
}

pub fn node_finished(uses: &str, bundle: &str, elapsed: Duration) {
    histogram!(NODE_DURATION, "uses" => uses.to_owned(), "bundle" => bundle.to_owned())
        .record(elapsed.as_secs_f64());
}

pub fn run_started(blueprint: &str) {
    counter!(RUNS_STARTED, "blueprint" => blueprint.to_owned()).increment(1);
}

/// A run reached `status` (terminal); `elapsed` since it started, if known.
pub fn run_finished(blueprint: &str, status: RunState, elapsed: Option<Duration>) {
    let blueprint = blueprint.to_owned();
    counter!(RUNS_FINISHED, "blueprint" => blueprint.clone(), "status" => status.as_str())
        .increment(1);
    if let Some(elapsed) = elapsed {
        histogram!(RUN_DURATION, "blueprint" => blueprint).record(elapsed.as_secs_f64());
    }
}

pub fn queue_received(elapsed: Duration, messages: usize) {
    histogram!(QUEUE_RECEIVE_DURATION).record(elapsed.as_secs_f64());
    counter!(QUEUE_MESSAGES_RECEIVED).increment(messages as u64);
}

/// Counts a message as in flight until dropped.
#[must_use = "the message counts as in flight until this is dropped"]
pub struct InFlight(());

impl InFlight {
    pub fn start() -> Self {
        gauge!(MESSAGES_IN_FLIGHT).increment(1.0);
        Self(())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        gauge!(MESSAGES_IN_FLIGHT).decrement(1.0);
    }
}

/// Runs `request`, one request to `service` (`queue`, `cosmos`, `redis`,
/// `sqlite`), within its trace span, and records it ([`backend_request`]).
pub async fn backend_call<T, E>(
    service: &'static str,
    operation: &'static str,
    request: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    let started = std::time::Instant::now();
    // Boxed: a request's future (an SDK call inside its retries) is large,
    // and callers' futures would otherwise hold it inline, nested in theirs.
    let answer = Box::pin(request.instrument(backend_span(service, operation))).await;
    backend_request(service, operation, started.elapsed(), answer.is_ok());
    answer
}

/// One request to `service` ended.
pub fn backend_request(
    service: &'static str,
    operation: &'static str,
    elapsed: Duration,
    ok: bool,
) {
    counter!(BACKEND_REQUESTS, "service" => service, "operation" => operation).increment(1);
    if !ok {
        counter!(BACKEND_ERRORS, "service" => service, "operation" => operation).increment(1);
    }
    histogram!(BACKEND_REQUEST_DURATION, "service" => service, "operation" => operation)
        .record(elapsed.as_secs_f64());
}

pub fn plugin_instantiated(bundle: &str) {
    counter!(PLUGIN_INSTANTIATIONS, "bundle" => bundle.to_owned()).increment(1);
}

pub fn plugin_trapped(kind: TrapKind) {
    counter!(PLUGIN_TRAPS, "kind" => kind.as_str()).increment(1);
}

pub fn compile_cache(hit: bool) {
    counter!(COMPILE_CACHE, "result" => if hit { "hit" } else { "miss" }).increment(1);
}

pub fn poisoned() {
    counter!(POISON_MESSAGES).increment(1);
}

/// A reconciler pass ended; `resent` runs got moving, `None` if it failed.
pub fn reconciler_pass(resent: Option<usize>) {
    let result = if resent.is_some() { "ok" } else { "failed" };
    counter!(RECONCILER_PASSES, "result" => result).increment(1);
    counter!(RECONCILER_RUNS_RESENT).increment(resent.unwrap_or(0) as u64);
}

// ---------------------------------------------------------------------------
// Traces

/// The target of the host's trace spans: a run's node attempts, their
/// backend requests and plugin calls. They are exported (with the events
/// within them) when a trace export is installed, and kept out of the log.
pub const TRACE_TARGET: &str = "flowcraft::trace";

/// The target of what guests log or print: within a plugin call's span it
/// becomes that span's events.
pub const GUEST_LOG_TARGET: &str = "flowcraft_plugins::guest";

/// A W3C trace context: the trace a run belongs to and a span in it (the
/// run's root span, or the node attempt that scheduled a job), and whether
/// the trace is recorded. Written as a `traceparent` header value,
/// `00-<trace id>-<span id>-<flags>`, flags `01` when recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceParent {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    /// Whether the run's spans are recorded and exported. Decided once,
    /// when the run starts, by the trace export of the process that starts
    /// it (recorded when that process exports none, so that the workers
    /// that export record it); every span of the run keeps to it.
    pub sampled: bool,
}

impl TraceParent {
    /// A new trace and its root span, with ids of uniformly random bytes
    /// (a ratio sampler decides by the trace id's bits, so they may not hold
    /// a UUID's fixed version and variant bits), sampled as this process's
    /// trace export decides (see [`TraceExport::samples`]).
    pub fn new_trace() -> Self {
        let trace_id = random_id();
        let sampled = TRACE_EXPORT
            .get()
            .is_none_or(|export| export.samples(&trace_id));
        Self {
            trace_id,
            span_id: random_id(),
            sampled,
        }
    }

    /// A new span in `parent`'s trace (the root span of a child run),
    /// sampled as `parent` is.
    pub fn child_of(parent: &TraceParent) -> Self {
        Self {
            span_id: random_id(),
            ..*parent
        }
    }

    /// Reads a `traceparent` value (version 00 and the future versions
    /// that keep its layout); `None` for anything else or all-zero ids.
    pub fn parse(text: &str) -> Option<Self> {
        let mut parts = text.trim().split('-');
        let version = parts.next().filter(|v| v.len() == 2 && *v != "ff")?;
        u8::from_str_radix(version, 16).ok()?;
        let trace_id: [u8; 16] = hex::decode(parts.next()?).ok()?.try_into().ok()?;
        let span_id: [u8; 8] = hex::decode(parts.next()?).ok()?.try_into().ok()?;
        let flags = parts.next().filter(|f| f.len() == 2)?;
        let flags = u8::from_str_radix(flags, 16).ok()?;
        let valid = trace_id != [0; 16] && span_id != [0; 8];
        valid.then_some(Self {
            trace_id,
            span_id,
            sampled: flags & 1 == 1,
        })
    }

    pub fn same_trace(&self, other: &TraceParent) -> bool {
        self.trace_id == other.trace_id
    }
}

/// A trace or span id of uniformly random bytes, never all zero (which is
/// invalid; a chance of 2^-64 for a span id).
fn random_id<const N: usize>() -> [u8; N] {
    let mut id = [0u8; N];
    if getrandom::fill(&mut id).is_err() {
        // No system randomness: a UUID's bytes keep ids unique at least.
        let uuid = uuid::Uuid::new_v4();
        id.copy_from_slice(&uuid.as_bytes()[..N]);
    }
    id[N - 1] |= u8::from(id == [0; N]);
    id
}

impl std::fmt::Display for TraceParent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (trace, span) = (hex::encode(self.trace_id), hex::encode(self.span_id));
        let flags = u8::from(self.sampled);
        write!(f, "00-{trace}-{span}-{flags:02x}")
    }
}

impl serde::Serialize for TraceParent {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for TraceParent {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text)
            .ok_or_else(|| serde::de::Error::custom(format!("not a W3C traceparent: {text:?}")))
    }
}

/// A run that reached its end, for its root span.
#[derive(Debug, Clone)]
pub struct RunSpan<'a> {
    pub trace: TraceParent,
    /// The span the root span is a child of: for a subflow's child run, the
    /// attempt of the node that started it.
    pub caller: Option<TraceParent>,
    pub run_id: &'a str,
    pub blueprint_id: &'a str,
    pub status: &'static str,
    pub started_ms: i64,
    pub ended_ms: i64,
}

/// What a trace export does with the engine's spans (`flowcraft-telemetry`
/// implements it over OpenTelemetry).
pub trait TraceExport: Send + Sync {
    /// Whether a new run whose trace has this id is recorded.
    fn samples(&self, trace_id: &[u8; 16]) -> bool;
    /// Makes `span` a child of `parent` (a span of another process, maybe).
    fn adopt(&self, span: &tracing::Span, parent: &TraceParent);
    /// `span`'s own trace context, for the jobs scheduled within it.
    fn traceparent(&self, span: &tracing::Span) -> Option<TraceParent>;
    /// Exports a run's root span once the run has ended.
    fn run_ended(&self, run: &RunSpan);
}

static TRACE_EXPORT: std::sync::OnceLock<Box<dyn TraceExport>> = std::sync::OnceLock::new();

/// Installs this process's trace export; once per process (later calls are
/// ignored).
pub fn set_trace_export(export: Box<dyn TraceExport>) {
    let _ = TRACE_EXPORT.set(export);
}

/// The span of one node attempt (or of a job found to be a duplicate),
/// a child of `parent` when there is one; none (it costs nothing) when this
/// process exports no spans or `parent`'s trace is not recorded (see
/// [`recorded`]).
pub fn node_span(
    parent: Option<&TraceParent>,
    run_id: &str,
    node_id: &str,
    uses: &str,
    attempt: u32,
) -> tracing::Span {
    let Some(export) = TRACE_EXPORT.get() else {
        return tracing::Span::none();
    };
    if parent.is_some_and(|parent| !recorded(export.as_ref(), parent)) {
        return tracing::Span::none();
    }
    let span = tracing::info_span!(
        target: TRACE_TARGET,
        "node",
        otel.name = %format_args!("node {node_id}"),
        flowcraft.run_id = %run_id,
        flowcraft.node_id = %node_id,
        flowcraft.uses = %uses,
        flowcraft.attempt = attempt,
        flowcraft.bundle = tracing::field::Empty,
        flowcraft.outcome = tracing::field::Empty,
    );
    if let Some(parent) = parent {
        export.adopt(&span, parent);
    }
    span
}

/// Whether this process records the spans of `trace`: the run was sampled
/// when it started, and this process's sampler keeps its trace id too (the
/// same answer wherever the sampler is configured alike; a run started by
/// a process that exports nothing is sampled by the workers alone).
fn recorded(export: &dyn TraceExport, trace: &TraceParent) -> bool {
    trace.sampled && export.samples(&trace.trace_id)
}

/// The span of one backend request within a node attempt's span (none
/// outside one: a worker's receives and the reconciler's queries belong to
/// no run).
pub fn backend_span(service: &'static str, operation: &'static str) -> tracing::Span {
    if !within_a_recorded_span() {
        return tracing::Span::none();
    }
    tracing::info_span!(
        target: TRACE_TARGET,
        "backend",
        otel.name = %format_args!("{service} {operation}"),
        otel.kind = "client",
    )
}

/// The span of a plugin call within a node attempt's span (none outside
/// one); what the guest logs meanwhile becomes its events.
pub fn call_span(uses: &str, bundle: &str, digest: &str) -> tracing::Span {
    if !within_a_recorded_span() {
        return tracing::Span::none();
    }
    tracing::info_span!(
        target: TRACE_TARGET,
        "call",
        otel.name = %format_args!("call {uses}"),
        flowcraft.bundle = %bundle,
        flowcraft.digest = %digest,
    )
}

/// Whether spans are exported and the current span is one of them (a node
/// attempt's, or a span within it): a child span has a parent to join. The
/// export is asked first, so that without one a call costs no lookup of the
/// current span.
fn within_a_recorded_span() -> bool {
    TRACE_EXPORT.get().is_some() && !tracing::Span::current().is_none()
}

/// `span`'s trace context, when spans are exported.
pub fn traceparent_of(span: &tracing::Span) -> Option<TraceParent> {
    TRACE_EXPORT.get()?.traceparent(span)
}

/// A run ended: its root span is exported (when spans are, and the run's
/// trace is [`recorded`]).
pub fn run_ended(run: &RunSpan) {
    if let Some(export) = TRACE_EXPORT.get()
        && recorded(export.as_ref(), &run.trace)
    {
        export.run_ended(run);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ratio sampler keeps a run when the trace id's lower half, read as
    /// a number, is small enough: its top bit must be as random as the rest.
    #[test]
    fn trace_ids_are_random_where_a_ratio_sampler_reads_them() {
        let with_top_bit = (0..2_000)
            .filter(|_| TraceParent::new_trace().trace_id[8] & 0x80 != 0)
            .count();
        assert!(
            (800..1_200).contains(&with_top_bit),
            "{with_top_bit} of 2000"
        );
    }

    #[test]
    fn a_traceparent_reads_back_what_it_writes_and_refuses_the_rest() {
        let trace = TraceParent::new_trace();
        let text = trace.to_string();
        assert_eq!(text.len(), 55);
        assert!(text.starts_with("00-") && text.ends_with("-01"), "{text}");
        assert_eq!(TraceParent::parse(&text), Some(trace));
        let json = serde_json::to_string(&trace).unwrap();
        assert_eq!(serde_json::from_str::<TraceParent>(&json).unwrap(), trace);

        let w3c_example = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let parsed = TraceParent::parse(w3c_example).unwrap();
        assert!(parsed.sampled);
        assert_eq!(parsed.to_string(), w3c_example);
        let not_recorded = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
        let parsed = TraceParent::parse(not_recorded).unwrap();
        assert!(!parsed.sampled);
        assert_eq!(parsed.to_string(), not_recorded);
        for refused in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902bz-01",
        ] {
            assert_eq!(TraceParent::parse(refused), None, "{refused:?}");
        }
        assert!(serde_json::from_str::<TraceParent>("\"nonsense\"").is_err());
    }
}
