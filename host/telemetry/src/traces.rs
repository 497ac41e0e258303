//! One OpenTelemetry trace per run, exported over OTLP when the standard
//! `OTEL_EXPORTER_OTLP_*` environment names an endpoint (off otherwise).
//!
//! The run's trace context is chosen when the run starts and kept in its
//! progress record (`flowcraft_core::telemetry::new_trace`): a trace id and
//! the span id of the run's root span. Every node attempt, on whichever
//! worker and however late, is a span whose parent is the span that
//! scheduled it (carried in the job's message) or the run's root span; the
//! backend requests and the plugin call of an attempt are its children, and
//! the guest's log records within a call become events of the call's span.
//! The root span itself is exported by the worker that brings the run to its
//! end, with the ids chosen at the start ([`PresetIds`]) and the run's start
//! and end times. A subflow's child run is in its parent's trace, its root
//! span a child of the subflow node's span.
//!
//! The host's spans are `tracing` spans of target
//! [`TRACE_TARGET`](flowcraft_core::telemetry::TRACE_TARGET);
//! [`Traces::layer`] turns them into OpenTelemetry spans.

use std::cell::Cell;
use std::time::{Duration, SystemTime};

use flowcraft_core::telemetry::{self, RunSpan, TRACE_TARGET, TraceExport, TraceParent};
use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId,
    TraceState, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{
    Config, IdGenerator, RandomIdGenerator, SamplingDecision, SdkTracerProvider, ShouldSample,
    Tracer,
};
use tracing::Subscriber;
use tracing::level_filters::LevelFilter;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::registry::LookupSpan;

use crate::TelemetryError;

/// The instrumentation scope of every span.
const SCOPE: &str = "flowcraft-host";

/// This process's trace export, once configured.
pub struct Traces {
    provider: SdkTracerProvider,
    tracer: Tracer,
}

impl Traces {
    /// The trace export the environment asks for: `None` unless
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`
    /// is set (and neither `OTEL_SDK_DISABLED=true` nor
    /// `OTEL_TRACES_EXPORTER=none`). The protocol (`grpc` or `http/protobuf`,
    /// the default), headers, timeout and batching follow the other standard
    /// variables. Installs the hooks through which the engine's spans join
    /// their runs' traces. Call within a tokio runtime (gRPC needs one).
    pub fn from_environment() -> Result<Option<Self>, TelemetryError> {
        let set = |name: &str| std::env::var(name).is_ok_and(|value| !value.trim().is_empty());
        let disabled = std::env::var("OTEL_SDK_DISABLED")
            .is_ok_and(|v| v.eq_ignore_ascii_case("true"))
            || std::env::var("OTEL_TRACES_EXPORTER").is_ok_and(|v| v.eq_ignore_ascii_case("none"));
        if disabled
            || !(set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
        {
            return Ok(None);
        }
        let exporter = opentelemetry_otlp::SpanExporter::builder().build()?;
        let mut resource = Resource::builder();
        if !set("OTEL_SERVICE_NAME") {
            resource = resource.with_service_name(SCOPE);
        }
        // The SDK's reading of `OTEL_TRACES_SAMPLER` and its argument; the
        // engine asks it once per run (`TraceExport::samples`).
        let sampler = Config::default().sampler;
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_sampler(sampler.box_clone())
            .with_id_generator(PresetIds::default())
            .with_resource(resource.build())
            .build();
        let tracer = provider.tracer(SCOPE);
        let traces = Self { provider, tracer };
        telemetry::set_trace_export(Box::new(Export {
            tracer: traces.tracer.clone(),
            sampler,
        }));
        Ok(Some(traces))
    }

    /// The `tracing` layer that exports the host's trace spans and the
    /// events (guest log records among them) that happen within them.
    pub fn layer<S>(&self) -> impl Layer<S> + use<S>
    where
        S: Subscriber + for<'span> LookupSpan<'span>,
    {
        let wanted = Targets::new()
            .with_target(TRACE_TARGET, LevelFilter::INFO)
            .with_target(
                flowcraft_core::telemetry::GUEST_LOG_TARGET,
                LevelFilter::TRACE,
            );
        // Only what the spans' own fields say: source locations, thread
        // names, busy/idle times and the target would double what each
        // span costs to export (bench/results) and tell an operator nothing.
        // Nothing else here reads OpenTelemetry's current context, so a
        // span does not make itself current on each poll of its future.
        tracing_opentelemetry::layer()
            .with_tracer(self.tracer.clone())
            .with_context_activation(false)
            .with_location(false)
            .with_threads(false)
            .with_tracked_inactivity(false)
            .with_target(false)
            .with_filter(wanted)
    }

    /// Exports the spans still queued (waiting at most a few seconds) and
    /// stops the export.
    pub fn shutdown(&self) {
        if let Err(error) = self.provider.shutdown_with_timeout(Duration::from_secs(5)) {
            tracing::warn!(%error, "could not export the last trace spans");
        }
    }
}

/// The hooks the engine calls (see `flowcraft_core::telemetry`).
struct Export {
    tracer: Tracer,
    sampler: Box<dyn ShouldSample>,
}

impl TraceExport for Export {
    fn samples(&self, trace_id: &[u8; 16]) -> bool {
        let root = self.sampler.should_sample(
            None,
            TraceId::from_bytes(*trace_id),
            "run",
            &SpanKind::Internal,
            &[],
            &[],
        );
        root.decision == SamplingDecision::RecordAndSample
    }

    fn adopt(&self, span: &tracing::Span, parent: &TraceParent) {
        let context = Context::new().with_remote_span_context(span_context(parent));
        // A span no layer records (filtered out) has nothing to adopt.
        let _ = span.set_parent(context);
    }

    fn traceparent(&self, span: &tracing::Span) -> Option<TraceParent> {
        let context = span.context();
        let span_context = context.span().span_context().clone();
        span_context.is_valid().then(|| TraceParent {
            trace_id: span_context.trace_id().to_bytes(),
            span_id: span_context.span_id().to_bytes(),
            sampled: span_context.is_sampled(),
        })
    }

    fn run_ended(&self, run: &RunSpan) {
        PRESET.with(|preset| {
            preset.set(Preset {
                trace_id: Some(TraceId::from_bytes(run.trace.trace_id)),
                span_id: Some(SpanId::from_bytes(run.trace.span_id)),
            })
        });
        let parent = match &run.caller {
            Some(caller) => Context::new().with_remote_span_context(span_context(caller)),
            None => Context::new(),
        };
        let mut span = self
            .tracer
            .span_builder(format!("run {}", run.blueprint_id))
            .with_kind(SpanKind::Internal)
            .with_start_time(at(run.started_ms))
            .with_attributes([
                KeyValue::new("flowcraft.run_id", run.run_id.to_owned()),
                KeyValue::new("flowcraft.blueprint_id", run.blueprint_id.to_owned()),
                KeyValue::new("flowcraft.status", run.status.to_owned()),
            ])
            .start_with_context(&self.tracer, &parent);
        PRESET.with(|preset| preset.set(Preset::default()));
        if run.status == "failed" {
            span.set_status(Status::error("the run failed"));
        }
        span.end_with_timestamp(at(run.ended_ms));
    }
}

fn span_context(parent: &TraceParent) -> SpanContext {
    SpanContext::new(
        TraceId::from_bytes(parent.trace_id),
        SpanId::from_bytes(parent.span_id),
        if parent.sampled {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::NOT_SAMPLED
        },
        true,
        TraceState::default(),
    )
}

/// Unix milliseconds as a time.
fn at(unix_ms: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(unix_ms.max(0) as u64)
}

#[derive(Clone, Copy, Default)]
struct Preset {
    trace_id: Option<TraceId>,
    span_id: Option<SpanId>,
}

thread_local! {
    /// Ids the next span built on this thread takes instead of random ones.
    static PRESET: Cell<Preset> = const { Cell::new(Preset { trace_id: None, span_id: None }) };
}

/// Random ids, except for a run's root span, whose ids were chosen when the
/// run started: the SDK takes a span's ids from its id generator only, so
/// [`Export::run_ended`] presets them for the span it builds (on its own
/// thread, between two calls with nothing else in between).
#[derive(Debug, Default)]
struct PresetIds {
    random: RandomIdGenerator,
}

impl IdGenerator for PresetIds {
    fn new_trace_id(&self) -> TraceId {
        take_preset(|preset| preset.trace_id.take()).unwrap_or_else(|| self.random.new_trace_id())
    }

    fn new_span_id(&self) -> SpanId {
        take_preset(|preset| preset.span_id.take()).unwrap_or_else(|| self.random.new_span_id())
    }
}

/// Takes one of this thread's preset ids, if set.
fn take_preset<T>(take: impl FnOnce(&mut Preset) -> Option<T>) -> Option<T> {
    PRESET.with(|cell| {
        let mut preset = cell.get();
        let id = take(&mut preset);
        cell.set(preset);
        id
    })
}
