//! Riding out throttling and short outages in place, shared by the queue,
//! Cosmos DB and Redis stores.
//!
//! A request that fails *transiently* is repeated by the store itself instead
//! of failing the job (a failed job comes back only after its message's
//! visibility timeout, typically 30 s or more):
//!
//! - **throttled** ([`Transient::Throttled`]): the service answered 429 (or
//!   the storage service's 503 `ServerBusy`) and did not perform the request.
//!   The advised wait (`x-ms-retry-after-ms`, `retry-after-ms` or
//!   `Retry-After` in seconds or as an HTTP date, see [`advised_wait`]) is
//!   honoured exactly; without advice the wait is the back-off below;
//! - **unreachable** ([`Transient::Unreachable`]): no usable answer
//!   (connection refused or reset, timeout). Waits grow from
//!   [`RetryPolicy::first_backoff`], doubling up to
//!   [`RetryPolicy::max_backoff`], each randomised to between half and all of
//!   its bound so that many workers do not come back in lockstep.
//!
//! Both are bounded by [`RetryPolicy::max_attempts`] and by the total time
//! waited, [`RetryPolicy::max_wait`]: an advised wait that would exceed what
//! is left is not waited at all. Then the last error surfaces as it would
//! without retries (the job fails and is delivered again later), so a long
//! outage still ends in the usual redelivery rather than in a stuck worker.
//!
//! Which requests may be repeated at all is the caller's decision (the
//! classifier answers `None` for the others). Logging: the first time a
//! request finds its service unreachable is one `warn` line naming the
//! service, the operation and the error; every later retry, and every
//! throttled one (429s are part of normal operation on a busy account), is a
//! `debug` line.

use std::future::Future;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use flowcraft_core::telemetry;

/// Why a failed request may be repeated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transient {
    /// The service asked the client to slow down, advising a wait or not.
    Throttled(Option<Duration>),
    /// No usable answer came back.
    Unreachable,
}

/// Limits of the in-place retries of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// The most time spent waiting between attempts, in all.
    pub max_wait: Duration,
    /// The bound of the first back-off (when no wait is advised).
    pub first_backoff: Duration,
    /// The largest back-off bound.
    pub max_backoff: Duration,
}

impl RetryPolicy {
    /// 12 attempts within 10 s of waiting; back-off from 100 ms up to 1 s:
    /// rides out an outage of about 6 s and a burst of throttling.
    pub const DEFAULT: Self = Self {
        max_attempts: 12,
        max_wait: Duration::from_secs(10),
        first_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_secs(1),
    };
}

impl RetryPolicy {
    /// For checks while connecting (a worker starting up): one quick retry,
    /// so that a wrong endpoint is reported at once.
    pub const SETUP: Self = Self {
        max_attempts: 2,
        max_wait: Duration::from_millis(200),
        first_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_millis(100),
    };
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// The retry budget of one request.
#[derive(Debug)]
pub struct Backoff {
    policy: RetryPolicy,
    attempts: u32,
    waited: Duration,
    bound: Duration,
}

impl Backoff {
    pub fn new(policy: RetryPolicy) -> Self {
        Self {
            policy,
            attempts: 1,
            waited: Duration::ZERO,
            bound: policy.first_backoff,
        }
    }

    /// The wait before attempting again a request whose latest attempt
    /// failed for `why`; `None` when the budget is spent.
    pub fn next(&mut self, why: Transient) -> Option<Duration> {
        if self.attempts >= self.policy.max_attempts {
            return None;
        }
        let wait = match why {
            Transient::Throttled(Some(advised)) => advised,
            Transient::Throttled(None) | Transient::Unreachable => {
                let wait = jitter(self.bound);
                self.bound = (self.bound * 2).min(self.policy.max_backoff);
                wait
            }
        };
        let waited = self.waited.checked_add(wait)?;
        if waited > self.policy.max_wait {
            return None;
        }
        self.waited = waited;
        self.attempts += 1;
        Some(wait)
    }

    /// Attempts granted so far, the first included.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Time waited so far.
    pub fn waited(&self) -> Duration {
        self.waited
    }
}

/// A random duration between half of `bound` and `bound`.
fn jitter(bound: Duration) -> Duration {
    static DRAWS: AtomicU64 = AtomicU64::new(0);
    thread_local! {
        static SEED: RandomState = RandomState::new();
    }
    let nanos = u64::try_from(bound.as_nanos()).unwrap_or(u64::MAX);
    if nanos < 2 {
        return bound;
    }
    let draw = SEED.with(|seed| seed.hash_one(DRAWS.fetch_add(1, Ordering::Relaxed)));
    Duration::from_nanos(nanos / 2 + draw % (nanos - nanos / 2))
}

/// The wait a throttling answer advises, from its headers (`header(name)`
/// gives a header's value, names in lower case): `x-ms-retry-after-ms` or
/// `retry-after-ms` (milliseconds, fractions allowed), else `Retry-After`
/// (whole seconds, or an HTTP date: the time until then, zero if past).
pub fn advised_wait<'a>(header: impl Fn(&str) -> Option<&'a str>) -> Option<Duration> {
    for name in ["x-ms-retry-after-ms", "retry-after-ms"] {
        // A value no duration can hold (negative, not finite, 1e300) is ignored.
        if let Some(wait) = header(name)
            .and_then(|v| v.trim().parse::<f64>().ok())
            .and_then(|ms| Duration::try_from_secs_f64(ms / 1000.0).ok())
        {
            return Some(wait);
        }
    }
    let value = header("retry-after")?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at =
        time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc2822).ok()?;
    let left = at - time::OffsetDateTime::now_utc();
    Some(Duration::try_from(left).unwrap_or(Duration::ZERO))
}

/// A backend service, as log lines and metrics name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Queue,
    Cosmos,
    Redis,
}

impl Service {
    /// The name log lines use.
    pub fn name(self) -> &'static str {
        match self {
            Self::Queue => "queue service",
            Self::Cosmos => "Cosmos DB",
            Self::Redis => "Redis",
        }
    }

    /// The `service` label of the backend metrics.
    pub fn label(self) -> &'static str {
        match self {
            Self::Queue => "queue",
            Self::Cosmos => "cosmos",
            Self::Redis => "redis",
        }
    }
}

/// Runs `request` until it succeeds, fails for good (`classify` answers
/// `None`), or the budget of `policy` is spent; answers the last result and
/// the number of attempts made. `service` and `operation` name the request
/// in log lines and metrics (one request, its retries included);
/// `describe` gives an error as one line.
pub async fn retrying<T, E, F, Fut>(
    service: Service,
    operation: &'static str,
    policy: RetryPolicy,
    classify: impl Fn(&E) -> Option<Transient>,
    describe: impl Fn(&E) -> String,
    request: F,
) -> (Result<T, E>, u32)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut attempts = 0;
    let repeated = async {
        let (result, made) = repeating(
            service.name(),
            operation,
            policy,
            classify,
            describe,
            request,
        )
        .await;
        attempts = made;
        result
    };
    let result = telemetry::backend_call(service.label(), operation, repeated).await;
    (result, attempts)
}

async fn repeating<T, E, F, Fut>(
    service: &str,
    operation: &str,
    policy: RetryPolicy,
    classify: impl Fn(&E) -> Option<Transient>,
    describe: impl Fn(&E) -> String,
    mut request: F,
) -> (Result<T, E>, u32)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut backoff = Backoff::new(policy);
    let mut warned = false;
    loop {
        let error = match request().await {
            Ok(value) => {
                if warned {
                    tracing::info!(
                        service,
                        operation,
                        attempts = backoff.attempts(),
                        waited_ms = backoff.waited().as_millis() as u64,
                        "{service} reachable again"
                    );
                }
                return (Ok(value), backoff.attempts());
            }
            Err(error) => error,
        };
        let Some(why) = classify(&error) else {
            return (Err(error), backoff.attempts());
        };
        let Some(wait) = backoff.next(why) else {
            return (Err(error), backoff.attempts());
        };
        match why {
            Transient::Unreachable if !warned => {
                warned = true;
                tracing::warn!(
                    service,
                    operation,
                    error = %describe(&error),
                    "{service} unreachable; retrying with back-off"
                );
            }
            Transient::Unreachable => {
                tracing::debug!(service, operation, error = %describe(&error), wait_ms = wait.as_millis() as u64, "{service} still unreachable; retrying");
            }
            Transient::Throttled(advised) => {
                tracing::debug!(
                    service,
                    operation,
                    advised_ms = advised.map(|a| a.as_millis() as u64),
                    wait_ms = wait.as_millis() as u64,
                    "{service} throttled the request; retrying after the advised wait"
                );
            }
        }
        tokio::time::sleep(wait).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::atomic::AtomicU32;

    const QUICK: RetryPolicy = RetryPolicy {
        max_attempts: 5,
        max_wait: Duration::from_secs(1),
        first_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(40),
    };

    fn headers(pairs: &[(&'static str, &'static str)]) -> HashMap<&'static str, &'static str> {
        pairs.iter().copied().collect()
    }

    #[test]
    fn advised_waits_come_from_any_of_the_three_headers() {
        let wait = |pairs: &[(&'static str, &'static str)]| {
            let map = headers(pairs);
            advised_wait(|name| map.get(name).copied())
        };
        assert_eq!(
            wait(&[("x-ms-retry-after-ms", "250")]),
            Some(Duration::from_millis(250))
        );
        assert_eq!(
            wait(&[("retry-after-ms", "1.5")]),
            Some(Duration::from_micros(1500))
        );
        assert_eq!(
            wait(&[("retry-after", " 2 ")]),
            Some(Duration::from_secs(2))
        );
        // The millisecond header is the more precise one.
        assert_eq!(
            wait(&[("retry-after", "2"), ("x-ms-retry-after-ms", "20")]),
            Some(Duration::from_millis(20))
        );
        assert_eq!(
            wait(&[("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT")]),
            Some(Duration::ZERO)
        );
        let soon = (time::OffsetDateTime::now_utc() + time::Duration::seconds(30))
            .format(&time::format_description::well_known::Rfc2822)
            .unwrap();
        let soon: &'static str = Box::leak(soon.into_boxed_str());
        let advised = wait(&[("retry-after", soon)]).unwrap();
        assert!(advised > Duration::from_secs(28) && advised <= Duration::from_secs(30));
        assert_eq!(wait(&[("x-ms-retry-after-ms", "-1")]), None);
        assert_eq!(wait(&[("x-ms-retry-after-ms", "1e300")]), None);
        assert_eq!(wait(&[("retry-after-ms", "NaN")]), None);
        assert_eq!(wait(&[("retry-after", "soon")]), None);
        assert_eq!(wait(&[]), None);
    }

    #[test]
    fn advised_waits_are_honoured_exactly_within_the_budget() {
        let mut backoff = Backoff::new(QUICK);
        let advised = Transient::Throttled(Some(Duration::from_millis(400)));
        assert_eq!(backoff.next(advised), Some(Duration::from_millis(400)));
        assert_eq!(backoff.next(advised), Some(Duration::from_millis(400)));
        // A third would make 1.2 s of the 1 s allowed: the error surfaces.
        assert_eq!(backoff.next(advised), None);
        assert_eq!(backoff.attempts(), 3);
        assert_eq!(backoff.waited(), Duration::from_millis(800));
    }

    #[test]
    fn back_off_doubles_with_jitter_up_to_its_cap_and_the_attempt_limit() {
        let mut backoff = Backoff::new(QUICK);
        let bounds = [10, 20, 40, 40];
        for bound in bounds {
            let wait = backoff.next(Transient::Unreachable).unwrap();
            let bound = Duration::from_millis(bound);
            assert!(wait >= bound / 2 && wait <= bound, "{wait:?} for {bound:?}");
        }
        assert_eq!(
            backoff.next(Transient::Unreachable),
            None,
            "5 attempts in all"
        );
        assert_eq!(backoff.next(Transient::Throttled(None)), None);
    }

    #[tokio::test]
    async fn requests_are_repeated_until_they_succeed_or_fail_for_good() {
        let calls = AtomicU32::new(0);
        let (result, attempts) = retrying(
            Service::Redis,
            "op",
            QUICK,
            |e: &&str| (*e == "busy").then_some(Transient::Throttled(Some(Duration::ZERO))),
            |e| e.to_string(),
            || async {
                match calls.fetch_add(1, Ordering::SeqCst) {
                    0 | 1 => Err("busy"),
                    _ => Ok(7),
                }
            },
        )
        .await;
        assert_eq!((result, attempts), (Ok(7), 3));

        let calls = AtomicU32::new(0);
        let (result, attempts) = retrying(
            Service::Redis,
            "op",
            QUICK,
            |e: &&str| (*e == "busy").then_some(Transient::Unreachable),
            |e| e.to_string(),
            || async {
                match calls.fetch_add(1, Ordering::SeqCst) {
                    0 => Err("busy"),
                    _ => Err::<(), _>("refused"),
                }
            },
        )
        .await;
        assert_eq!((result, attempts), (Err("refused"), 2));

        let started = std::time::Instant::now();
        let (result, attempts) = retrying(
            Service::Redis,
            "op",
            QUICK,
            |_: &&str| Some(Transient::Unreachable),
            |e| e.to_string(),
            || async { Err::<(), _>("down") },
        )
        .await;
        assert_eq!((result, attempts), (Err("down"), 5));
        assert!(started.elapsed() >= Duration::from_millis(55));
    }
}
