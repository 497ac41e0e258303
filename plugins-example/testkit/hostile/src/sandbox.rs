//! Probes of what the sandbox lets through: files, sockets, environment,
//! configuration and clocks. Each reports what happened instead of failing,
//! so the host's tests can assert on the outcome.

use std::collections::BTreeMap;
use std::io;
use std::net::TcpStream;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use flowcraft_sdk::{Context, Ignore, NodeError, Output};
use serde::{Deserialize, Serialize};

/// What a probe found: `{ok: true, content?}` or `{ok: false, error}`.
#[derive(Debug, Serialize)]
pub struct Probe {
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

impl Probe {
    fn of(result: io::Result<Option<String>>) -> Self {
        match result {
            Ok(content) => Self {
                ok: true,
                content,
                error: None,
            },
            Err(error) => Self {
                ok: false,
                content: None,
                error: Some(error.to_string()),
            },
        }
    }
}

/// What the clocks show: the wall clock's nanoseconds past its millisecond,
/// the first step the monotonic clock takes, and the resolutions the clocks
/// report (component builds only).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Clocks {
    wall_sub_milli_nanos: u32,
    monotonic_step_nanos: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    resolution_nanos: Option<Resolutions>,
}

#[derive(Debug, Serialize)]
pub struct Resolutions {
    monotonic: u64,
    wall: u64,
}

#[derive(Deserialize)]
pub struct ConfigParams {
    name: String,
}

pub fn read_file(_: &mut Context, _: Ignore, _: Ignore) -> Result<Output<Probe>, NodeError> {
    Ok(Output::new(Probe::of(
        std::fs::read_to_string("/etc/passwd").map(Some),
    )))
}

pub fn open_socket(_: &mut Context, _: Ignore, _: Ignore) -> Result<Output<Probe>, NodeError> {
    Ok(Output::new(Probe::of(
        TcpStream::connect(("127.0.0.1", 80)).map(|_| None),
    )))
}

pub fn read_env(
    _: &mut Context,
    _: Ignore,
    _: Ignore,
) -> Result<Output<BTreeMap<String, String>>, NodeError> {
    Ok(Output::new(std::env::vars().collect()))
}

/// Reads the clocks; waits (spinning) for the monotonic clock's first step.
pub fn clocks(_: &mut Context, _: Ignore, _: Ignore) -> Result<Output<Clocks>, NodeError> {
    let wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|e| NodeError::fatal(format!("the wall clock is before 1970: {e}")))?;
    let start = Instant::now();
    let step = loop {
        let elapsed = start.elapsed();
        if !elapsed.is_zero() {
            break elapsed;
        }
    };
    Ok(Output::new(Clocks {
        wall_sub_milli_nanos: wall.subsec_nanos() % 1_000_000,
        monotonic_step_nanos: u64::try_from(step.as_nanos()).unwrap_or(u64::MAX),
        resolution_nanos: resolutions(),
    }))
}

#[cfg(target_arch = "wasm32")]
fn resolutions() -> Option<Resolutions> {
    let wall = wasi::clocks::wall_clock::resolution();
    Some(Resolutions {
        monotonic: wasi::clocks::monotonic_clock::resolution(),
        wall: wall
            .seconds
            .saturating_mul(1_000_000_000)
            .saturating_add(u64::from(wall.nanoseconds)),
    })
}

/// Native builds (unit tests) have no WASI clocks to ask.
#[cfg(not(target_arch = "wasm32"))]
fn resolutions() -> Option<Resolutions> {
    None
}

pub fn config(
    ctx: &mut Context,
    _: Ignore,
    params: ConfigParams,
) -> Result<Output<String>, NodeError> {
    Ok(Output::maybe(ctx.config(&params.name)))
}

#[cfg(test)]
mod tests {
    use std::io;

    use flowcraft_sdk::testing::{Call, TestHost};
    use serde_json::json;

    use super::Probe;
    use crate::BUNDLE;

    #[test]
    fn config_outputs_granted_values_only() {
        let host = TestHost::new().with_config("apiKey", "s3cret");
        let granted = Call::new("config").params(json!({"name": "apiKey"}));
        assert_eq!(
            host.execute(&BUNDLE, granted).unwrap().output,
            Some(json!("s3cret"))
        );
        let missing = Call::new("config").params(json!({"name": "other"}));
        assert_eq!(host.execute(&BUNDLE, missing).unwrap().output, None);
    }

    #[test]
    fn clocks_report_a_monotonic_step() {
        let output = TestHost::new()
            .execute(&BUNDLE, Call::new("clocks"))
            .unwrap()
            .output
            .unwrap();
        assert!(
            output["monotonicStepNanos"].as_u64().unwrap() > 0,
            "{output}"
        );
        assert!(
            output["wallSubMilliNanos"].as_u64().unwrap() < 1_000_000,
            "{output}"
        );
    }

    #[test]
    fn probes_report_failures_as_data() {
        let denied = Probe::of(Err(io::Error::from(io::ErrorKind::PermissionDenied)));
        assert_eq!(
            serde_json::to_value(denied).unwrap(),
            json!({"ok": false, "error": "permission denied"})
        );
        let read = Probe::of(Ok(Some("root".to_owned())));
        assert_eq!(
            serde_json::to_value(read).unwrap(),
            json!({"ok": true, "content": "root"})
        );
    }
}
