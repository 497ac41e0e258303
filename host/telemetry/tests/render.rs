//! The Prometheus rendering of what the libraries record: names, labels and
//! the histogram buckets of `flowcraft_core::telemetry::BUCKETS`.

use std::time::Duration;

use flowcraft_core::telemetry::{self, JobOutcome};
use flowcraft_telemetry::Metrics;

#[tokio::test]
async fn recorded_events_render_as_prometheus_series() {
    let metrics = Metrics::install().expect("the first recorder of this process");
    telemetry::job_handled(JobOutcome::Handled);
    telemetry::job_handled(JobOutcome::Handled);
    telemetry::job_handled(JobOutcome::DeadLettered);
    telemetry::node_finished("double", "conformance@0.1.0", Duration::from_millis(3));
    telemetry::backend_request("sqlite", "settle", Duration::from_micros(700), false);

    let text = metrics.render();
    let lines: Vec<&str> = text.lines().collect();
    for expected in [
        "# TYPE flowcraft_jobs_total counter",
        r#"flowcraft_jobs_total{outcome="handled"} 2"#,
        r#"flowcraft_jobs_total{outcome="dead_lettered"} 1"#,
        "# TYPE flowcraft_node_duration_seconds histogram",
        r#"flowcraft_node_duration_seconds_bucket{uses="double",bundle="conformance@0.1.0",le="0.0025"} 0"#,
        r#"flowcraft_node_duration_seconds_bucket{uses="double",bundle="conformance@0.1.0",le="0.005"} 1"#,
        r#"flowcraft_node_duration_seconds_count{uses="double",bundle="conformance@0.1.0"} 1"#,
        r#"flowcraft_backend_requests_total{service="sqlite",operation="settle"} 1"#,
        r#"flowcraft_backend_errors_total{service="sqlite",operation="settle"} 1"#,
    ] {
        assert!(
            lines.contains(&expected),
            "missing {expected:?} in:\n{text}"
        );
    }
    assert!(
        Metrics::install().is_err(),
        "a second recorder is refused, not silently ignored"
    );
}
