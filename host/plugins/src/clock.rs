//! The clocks a guest sees, coarsened to whole milliseconds.
//!
//! Decision: every clock a guest can read ticks in
//! steps of [`CLOCK_RESOLUTION`] (1 ms), as browsers coarsen
//! `performance.now()` (to 100 µs–1 ms) against timing side channels; the
//! host's own clocks step in ~100 ns. Nodes need time for timestamps and
//! timeouts, both in milliseconds, so nothing legitimate is lost, and
//! installing our clocks costs nothing per call. A guest has no threads and
//! no shared memory, so it cannot build a finer timer from a counting
//! thread; it can still count its own loop iterations between two ticks,
//! which coarsening does not prevent (no runtime does) — its CPU time limit
//! bounds how long it may try.
//!
//! - `wasi:clocks/monotonic-clock`: time since the call started, rounded
//!   down to a whole millisecond; its reported resolution is 1 ms.
//! - `wasi:clocks/wall-clock` and the host interface's `now-ms`: Unix time
//!   rounded down to a whole millisecond (a host clock set before 1970 reads
//!   as 1970); resolution 1 ms.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use wasmtime_wasi::{HostMonotonicClock, HostWallClock};

/// The step of every clock a guest reads.
pub const CLOCK_RESOLUTION: Duration = Duration::from_millis(1);

/// `wasi:clocks/monotonic-clock` of one call, in whole milliseconds.
pub(crate) struct CoarseMonotonicClock {
    started: Instant,
}

impl CoarseMonotonicClock {
    /// A clock reading 0 now.
    pub fn new() -> Self {
        Self {
            started: Instant::now(),
        }
    }
}

impl HostMonotonicClock for CoarseMonotonicClock {
    fn resolution(&self) -> u64 {
        nanos(CLOCK_RESOLUTION)
    }

    fn now(&self) -> u64 {
        nanos(whole_millis(self.started.elapsed()))
    }
}

/// `wasi:clocks/wall-clock`, in whole milliseconds.
pub(crate) struct CoarseWallClock;

impl HostWallClock for CoarseWallClock {
    fn resolution(&self) -> Duration {
        CLOCK_RESOLUTION
    }

    fn now(&self) -> Duration {
        unix_time()
    }
}

/// Unix time in whole milliseconds; a clock set before 1970 reads as 1970.
pub(crate) fn unix_time() -> Duration {
    whole_millis(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default(),
    )
}

fn whole_millis(duration: Duration) -> Duration {
    Duration::from_millis(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX))
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readings_are_whole_milliseconds() {
        let monotonic = CoarseMonotonicClock::new();
        let first = monotonic.now();
        assert_eq!(first % 1_000_000, 0);
        assert_eq!(monotonic.resolution(), 1_000_000);
        assert_eq!(CoarseWallClock.now().subsec_nanos() % 1_000_000, 0);
        assert!(monotonic.now() >= first);
    }
}
