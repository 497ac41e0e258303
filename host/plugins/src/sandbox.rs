//! The per-call sandbox: the state a store carries while one node executes.
//!
//! Deny by default. The WASI p2 context grants nothing: no preopened
//! directories (file access fails with "not found"), no environment
//! variables, no arguments, no TCP/UDP and no name lookups (every socket
//! address is refused), stdin closed; stdout and stderr go to bounded
//! in-memory buffers. What a bundle may use beyond that comes from its
//! [`Grants`]: config values through the `flowcraft:node/host` interface (see
//! [`crate::host_api`]) and outbound HTTP to allow-listed hosts through
//! `wasi:http` (see [`crate::http`]; the [`HttpGate`] in the state denies
//! every request when the bundle has no `http` grant). Memory growth beyond
//! the configured limit traps. The clocks are coarsened to whole
//! milliseconds (see [`crate::clock`]); log records are budgeted per call
//! and per run (see [`crate::guest_log`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use flowcraft_core::context::NodeContext;
use thiserror::Error;
use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::capture::TailPipe;
use crate::clock::{CoarseMonotonicClock, CoarseWallClock};
use crate::config::Grants;
use crate::guest_log::CallLog;
use crate::http::{HttpAllowList, HttpGate};

/// Table elements one instance may grow its tables to.
const TABLE_ELEMENT_LIMIT: usize = 100_000;

/// Who is running: used for log records and error messages.
#[derive(Debug, Clone)]
pub(crate) struct CallLabels {
    /// `name@version` of the bundle.
    pub bundle: Arc<str>,
    pub uses: String,
    pub run_id: String,
    pub node_id: String,
}

/// The data of one call's store.
pub(crate) struct CallState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    /// Decides which outbound HTTP requests are sent (the bundle's grant).
    http_gate: HttpGate,
    table: ResourceTable,
    pub memory: MemoryGuard,
    /// The run context the host functions read and write.
    pub context: NodeContext,
    pub grants: Arc<Grants>,
    pub labels: CallLabels,
    pub stdout: TailPipe,
    pub stderr: TailPipe,
    /// What the call has logged, against its budgets.
    pub log: CallLog,
    /// When the call started and how long it may run.
    pub started: Instant,
    pub time_limit: Duration,
    /// Set by the epoch callback when it stopped the guest.
    pub time_limit_hit: bool,
    /// The first host rule the guest broke (a refused context write, a write
    /// quota): the call fails with it, whatever the guest answers.
    pub fault: Option<String>,
}

impl CallState {
    /// `http` is the bundle's parsed `http` grant (`None`: no outbound HTTP).
    pub fn new(
        context: NodeContext,
        grants: Arc<Grants>,
        http: Option<Arc<HttpAllowList>>,
        labels: CallLabels,
        log: CallLog,
        memory_limit: usize,
        time_limit: Duration,
    ) -> Self {
        let stdout = TailPipe::default();
        let stderr = TailPipe::default();
        Self {
            wasi: deny_all_wasi(&stdout, &stderr),
            http: WasiHttpCtx::new(),
            http_gate: HttpGate::new(labels.bundle.clone(), http),
            table: ResourceTable::new(),
            memory: MemoryGuard {
                limit: memory_limit,
                hit: None,
            },
            context,
            grants,
            labels,
            stdout,
            stderr,
            log,
            started: Instant::now(),
            time_limit,
            time_limit_hit: false,
            fault: None,
        }
    }
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for CallState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.http_gate,
        }
    }
}

/// A WASI context with nothing granted and coarse clocks; output goes to
/// the given pipes.
fn deny_all_wasi(stdout: &TailPipe, stderr: &TailPipe) -> WasiCtx {
    WasiCtxBuilder::new()
        .stdout(stdout.clone())
        .stderr(stderr.clone())
        .monotonic_clock(CoarseMonotonicClock::new())
        .wall_clock(CoarseWallClock)
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .socket_addr_check(|_, _| Box::pin(async { false }))
        .build()
}

/// Refuses (by trapping) memory growth beyond the per-instance limit.
pub(crate) struct MemoryGuard {
    limit: usize,
    /// The size the guest tried to grow to when it hit the limit.
    pub hit: Option<usize>,
}

impl ResourceLimiter for MemoryGuard {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limit {
            self.hit = Some(desired);
            return Err(wasmtime::Error::new(MemoryLimitExceeded {
                limit: self.limit,
                desired,
            }));
        }
        Ok(maximum.is_none_or(|max| desired <= max))
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= TABLE_ELEMENT_LIMIT && maximum.is_none_or(|max| desired <= max))
    }
}

/// The trap raised when a guest grows its memory beyond the limit.
#[derive(Debug, Error)]
#[error("memory limit of {} exceeded (the node tried to grow its memory to {})", mib(*limit), mib(*desired))]
pub(crate) struct MemoryLimitExceeded {
    pub limit: usize,
    pub desired: usize,
}

/// The trap raised when a guest computes past its time limit.
#[derive(Debug, Error)]
#[error("CPU time limit of {} ms exceeded", limit.as_millis())]
pub(crate) struct TimeLimitExceeded {
    pub limit: Duration,
}

/// The trap raised when a guest breaks a host rule without an error channel.
#[derive(Debug, Error)]
#[error("{0}")]
pub(crate) struct HostRuleBroken(pub String);

fn mib(bytes: usize) -> String {
    if bytes.is_multiple_of(1 << 20) {
        format!("{} MiB", bytes >> 20)
    } else {
        format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
    }
}
