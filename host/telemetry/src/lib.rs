//! What a flowcraft-host process reports about itself.
//!
//! The libraries record metrics through `flowcraft_core::telemetry` (the
//! `metrics` facade); [`Metrics::install`] makes this process keep them, as
//! Prometheus counters, gauges and histograms (bucket bounds from
//! `flowcraft_core::telemetry::BUCKETS`), and [`Metrics::render`] writes
//! them in the Prometheus text format. `serve` answers them at `/metrics`
//! of its API; a worker started with `--metrics-listen` on a listener of its
//! own ([`serve_metrics`]).
//!
//! [`Traces`] exports one OpenTelemetry trace per run when the standard
//! `OTEL_EXPORTER_OTLP_*` environment asks for it ([`traces`]).

use std::future::Future;
use std::time::Duration;

use axum::Router;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use flowcraft_core::telemetry;
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};

pub mod traces;

pub use traces::Traces;

/// How often histogram samples are folded into their buckets between
/// scrapes, so that a process nobody scrapes keeps bounded memory.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// The content type of the Prometheus text format.
pub const CONTENT_TYPE_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("cannot set up the metrics recorder: {0}")]
    Recorder(#[from] BuildError),
    #[error(
        "cannot set up the OpenTelemetry trace export: {0}; check OTEL_EXPORTER_OTLP_ENDPOINT and OTEL_EXPORTER_OTLP_PROTOCOL (grpc or http/protobuf)"
    )]
    Traces(#[from] opentelemetry_otlp::ExporterBuildError),
}

/// This process's metrics, once installed; cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    handle: PrometheusHandle,
}

impl Metrics {
    /// Installs the Prometheus recorder as this process's recorder and
    /// starts its upkeep on the current tokio runtime. Once per process: a
    /// second call fails.
    pub fn install() -> Result<Self, TelemetryError> {
        let mut builder = PrometheusBuilder::new();
        for (name, buckets) in telemetry::BUCKETS {
            builder = builder.set_buckets_for_metric(Matcher::Full(name.to_owned()), buckets)?;
        }
        let handle = builder.install_recorder()?;
        telemetry::describe();
        let upkeep = handle.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(UPKEEP_EVERY);
            loop {
                ticker.tick().await;
                upkeep.run_upkeep();
            }
        });
        Ok(Self { handle })
    }

    /// Every metric in the Prometheus text format.
    pub fn render(&self) -> String {
        self.handle.render()
    }

    /// The response to a scrape.
    pub fn scrape(&self) -> impl IntoResponse + use<> {
        ([(CONTENT_TYPE, CONTENT_TYPE_TEXT)], self.render())
    }
}

/// Serves `GET /metrics` on `listener` until `shutdown` resolves.
pub async fn serve_metrics(
    listener: tokio::net::TcpListener,
    metrics: Metrics,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let router = Router::new().route("/metrics", get(move || async move { metrics.scrape() }));
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}
