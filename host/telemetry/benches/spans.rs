//! What a node attempt's spans cost the process, apart from everything else
//! a job does: the span of the attempt, two backend requests and the plugin
//! call within it, the `traceparent` its successors carry, and every tenth
//! attempt a run's root span (a chain of ten). The requests and the call do
//! nothing, so the figure is the spans' own CPU time, the export's batching,
//! encoding and sending (on the SDK's own thread) included.
//!
//! `cargo bench -p flowcraft-telemetry --bench spans`; with
//! `OTEL_EXPORTER_OTLP_ENDPOINT` set the spans are exported there (as a
//! worker would: `node bench/driver/otlp-sink.mjs PORT` takes them and
//! keeps nothing), and `OTEL_TRACES_SAMPLER`/`_ARG` apply; without it
//! nothing is recorded. Prints CPU microseconds per node attempt (the whole
//! process's user and system time, from `/proc/self/stat`).

use std::time::Instant;

use flowcraft_core::telemetry::{self, RunSpan, TraceParent};
use tracing::Instrument;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Node attempts measured.
const ATTEMPTS: u32 = 200_000;
/// Node attempts per run.
const CHAIN: u32 = 10;

/// This process's CPU time so far, in seconds (Linux).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // The fields after the command name (which ends with the last ')').
    let fields: Vec<&str> = stat[stat.rfind(')').expect("stat format") + 2..]
        .split(' ')
        .collect();
    let ticks = |index: usize| fields[index].parse::<f64>().expect("a number");
    // utime and stime are fields 14 and 15 of the line, 12 and 13 here.
    (ticks(11) + ticks(12)) / 100.0
}

async fn attempt(
    trace: &TraceParent,
    parent: Option<TraceParent>,
    node: u32,
) -> Option<TraceParent> {
    let node_id = format!("step-{node}");
    let span = telemetry::node_span(
        Some(parent.as_ref().unwrap_or(trace)),
        "bench-run",
        &node_id,
        "double",
        1,
    );
    async {
        let _ = telemetry::backend_call("sqlite", "read progress", async { Ok::<_, ()>(()) }).await;
        let call = telemetry::call_span("double", "trivial@0.1.0", "sha256:0");
        async {}.instrument(call).await;
        let _ = telemetry::backend_call("sqlite", "settle", async { Ok::<_, ()>(()) }).await;
    }
    .instrument(span.clone())
    .await;
    span.record("flowcraft.outcome", "completed");
    telemetry::traceparent_of(&span)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let traces = flowcraft_telemetry::Traces::from_environment().expect("the trace export starts");
    if let Some(traces) = &traces {
        tracing_subscriber::registry().with(traces.layer()).init();
    }
    println!(
        "traces: {}",
        match &traces {
            Some(_) => "exported over OTLP",
            None => "off",
        }
    );
    let (began, cpu_began) = (Instant::now(), cpu_seconds());
    let mut trace = TraceParent::new_trace();
    let mut parent = None;
    for i in 0..ATTEMPTS {
        if i % CHAIN == 0 {
            if i > 0 {
                telemetry::run_ended(&RunSpan {
                    trace,
                    caller: None,
                    run_id: "bench-run",
                    blueprint_id: "bench-chain",
                    status: "completed",
                    started_ms: 0,
                    ended_ms: 1,
                });
            }
            trace = TraceParent::new_trace();
            parent = None;
        }
        parent = attempt(&trace, parent, i % CHAIN).await;
    }
    if let Some(traces) = traces {
        tokio::task::spawn_blocking(move || traces.shutdown())
            .await
            .expect("the export stops");
    }
    let (wall, cpu) = (began.elapsed().as_secs_f64(), cpu_seconds() - cpu_began);
    println!(
        "{ATTEMPTS} node attempts: {:.2} us CPU and {:.2} us wall each (export flushed)",
        cpu / f64::from(ATTEMPTS) * 1e6,
        wall / f64::from(ATTEMPTS) * 1e6
    );
}
