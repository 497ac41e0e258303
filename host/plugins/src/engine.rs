//! The wasmtime engine with flowcraft's settings, and the linker every bundle
//! is instantiated against.
//!
//! - async calls (guests yield to tokio at every epoch tick);
//! - the pooling allocator, tuned to keep linear memories, tables and fiber
//!   stacks resident between calls, so that the fresh instance every call
//!   gets reuses a slot's memory instead of mapping and zeroing new pages;
//! - epoch interruption driven by a [`EpochTicker`] thread every [`EPOCH_TICK`];
//! - the linker provides WASI p2 (with nothing granted, see [`crate::sandbox`]),
//!   `wasi:http` (outgoing-handler and types; requests pass only the calling
//!   bundle's allow-list, see [`crate::http`]) and the `flowcraft:node/host`
//!   interface. Imports a bundle does not use cost nothing per call.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use wasmtime::component::{HasSelf, Linker};
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig,
    WasmBacktraceDetails,
};

use crate::bindings::Bundle as BundleWorld;
use crate::cache::ArtifactCache;
use crate::config::PluginConfig;
use crate::error::{PluginError, chain};
use crate::guest_log::RunLogBudgets;
use crate::sandbox::CallState;

/// How often the engine's epoch advances: the granularity of time limits and
/// of a long-running guest's yields to tokio.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Core instances and tables one component may need. A Rust bundle
/// instantiates 3 core modules (its own plus the shims `wit-component` adds),
/// a JavaScript one (componentize-js) 4, a Python one (componentize-py) 14:
/// the interpreter's libraries are linked dynamically, one instance each. A
/// bundle needing more is refused at load, naming this limit.
pub(crate) const CORE_INSTANCES_PER_COMPONENT: u32 = 24;

/// Bytes of each resource kept resident (reset with `memset` instead of being
/// returned to the kernel) when an instance slot is reused.
const MEMORY_KEEP_RESIDENT: usize = 2 << 20;
const TABLE_KEEP_RESIDENT: usize = 64 << 10;
const STACK_KEEP_RESIDENT: usize = 128 << 10;

/// Everything a call needs that outlives calls: engine, linker, cache,
/// limits, and the runs' log budgets.
pub(crate) struct Runtime {
    pub engine: Engine,
    pub linker: Linker<CallState>,
    pub cache: ArtifactCache,
    pub limits: Limits,
    /// Log usage per run, shared by the calls of each run.
    pub run_logs: Arc<RunLogBudgets>,
    /// Bounds concurrent instances to the pool size: calls beyond it wait.
    pub slots: tokio::sync::Semaphore,
    _ticker: EpochTicker,
}

/// Per-call limits taken from the configuration.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub default_timeout: Duration,
    pub describe_timeout: Duration,
    pub memory_limit: usize,
    pub max_output_bytes: usize,
}

impl Runtime {
    /// Builds the engine, linker and epoch ticker for `config`; `cache` is
    /// where compiled bundles are kept (or not).
    pub fn new(
        config: &PluginConfig,
        cache_root: Option<std::path::PathBuf>,
    ) -> Result<Self, PluginError> {
        let engine = build_engine(config)?;
        let linker = build_linker(&engine)?;
        let cache = ArtifactCache::new(cache_root, &engine);
        let ticker = EpochTicker::start(&engine)?;
        Ok(Self {
            engine,
            linker,
            cache,
            limits: Limits {
                default_timeout: config.default_timeout,
                describe_timeout: config.describe_timeout,
                memory_limit: config.memory_limit,
                max_output_bytes: config.max_output_bytes,
            },
            run_logs: Arc::default(),
            slots: tokio::sync::Semaphore::new(config.max_instances.max(1) as usize),
            _ticker: ticker,
        })
    }
}

fn build_engine(config: &PluginConfig) -> Result<Engine, PluginError> {
    let instances = config.max_instances.max(1);
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(instances)
        .max_core_instances_per_component(CORE_INSTANCES_PER_COMPONENT)
        .total_core_instances(instances * CORE_INSTANCES_PER_COMPONENT)
        .total_memories(instances * 2)
        .total_tables(instances * CORE_INSTANCES_PER_COMPONENT)
        .total_stacks(instances)
        .max_memory_size(config.memory_limit)
        .linear_memory_keep_resident(MEMORY_KEEP_RESIDENT.min(config.memory_limit))
        .table_keep_resident(TABLE_KEEP_RESIDENT)
        .async_stack_keep_resident(STACK_KEEP_RESIDENT)
        .pagemap_scan(Enabled::Auto);

    let mut wasm = Config::new();
    wasm.wasm_component_model(true)
        .epoch_interruption(true)
        // Node errors carry the trap code and the guest's stderr; symbolizing
        // backtraces on every trap is slow and adds nothing for users.
        .wasm_backtrace_max_frames(None)
        .wasm_backtrace_details(WasmBacktraceDetails::Disable)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Engine::new(&wasm).map_err(|e| PluginError::Engine(chain(&e)))
}

fn build_linker(engine: &Engine) -> Result<Linker<CallState>, PluginError> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)
        .and_then(|()| wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker))
        .and_then(|()| BundleWorld::add_to_linker::<_, HasSelf<CallState>>(&mut linker, |s| s))
        .map_err(|e| PluginError::Engine(chain(&e)))?;
    Ok(linker)
}

/// A thread advancing the engine's epoch every [`EPOCH_TICK`]; stops when dropped.
struct EpochTicker {
    stop: Arc<AtomicBool>,
}

impl EpochTicker {
    fn start(engine: &Engine) -> Result<Self, PluginError> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let engine = engine.weak();
        thread::Builder::new()
            .name("flowcraft-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    thread::sleep(EPOCH_TICK);
                    match engine.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                }
            })
            .map_err(|e| {
                PluginError::Engine(format!("cannot start the epoch ticker thread: {e}"))
            })?;
        Ok(Self { stop })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
