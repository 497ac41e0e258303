//! Delivery policy: what becomes of a job's message when the engine answers
//! an error, and of a message that has been delivered too often.

use std::time::Duration;

use flowcraft_core::engine::EngineError;

/// What to do with a job's message after the engine failed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// A backend outage: leave the message alone; it reappears after its
    /// visibility timeout and the job runs again.
    Redeliver,
    /// Another worker may handle it (one that has the run's blueprint
    /// version or pinned bundle), or the failure may pass (a contained
    /// panic, a registry outage): give the
    /// message back after a short delay, and dead-letter it at the delivery
    /// limit with this error as the reason.
    ReturnLater,
    /// No delivery can succeed (a job of no run, of a node the run lacks):
    /// dead-letter it now with the error as the reason.
    DeadLetter,
}

impl Disposition {
    /// The disposition of a job the engine failed with `error`.
    pub fn of(error: &EngineError) -> Self {
        match error {
            error if error.is_transient() => Self::Redeliver,
            EngineError::UnknownBlueprint(_)
            | EngineError::UnknownBlueprintVersion { .. }
            | EngineError::ImplementationUnavailable { .. }
            | EngineError::Panicked { .. } => Self::ReturnLater,
            _ => Self::DeadLetter,
        }
    }
}

/// How long a returned message stays away: long enough for another worker
/// to take it, never longer than a lease.
pub fn return_delay(visibility: Duration) -> Duration {
    visibility.min(Duration::from_secs(30))
}

/// The reason to dead-letter a message received `dequeue_count` times, if
/// that is more than `max_dequeue` allows.
pub fn over_delivered(dequeue_count: u32, max_dequeue: u32) -> Option<String> {
    (dequeue_count > max_dequeue).then(|| {
        format!("delivered {dequeue_count} times without completing (limit {max_dequeue})")
    })
}

#[cfg(test)]
mod tests {
    use flowcraft_core::progress::RunState;
    use flowcraft_core::store::StoreError;
    use serde_json::Value;

    use super::*;

    #[test]
    fn each_engine_error_has_its_disposition() {
        let cases = [
            (
                EngineError::Store(StoreError::new("redis", "down")),
                Disposition::Redeliver,
            ),
            (
                EngineError::Store(StoreError::refused("cosmos", "413")),
                Disposition::DeadLetter,
            ),
            (
                EngineError::UnknownBlueprint("b".into()),
                Disposition::ReturnLater,
            ),
            (
                EngineError::UnknownBlueprintVersion {
                    blueprint: "b".into(),
                    version: Value::from(2),
                    loaded: "1".into(),
                },
                Disposition::ReturnLater,
            ),
            (
                EngineError::Panicked {
                    run: "r".into(),
                    node: "n".into(),
                    message: "boom".into(),
                },
                Disposition::ReturnLater,
            ),
            (
                EngineError::ImplementationUnavailable {
                    run: "r".into(),
                    node: "n".into(),
                    reason: "bundle sha256:00 is in no registry".into(),
                },
                Disposition::ReturnLater,
            ),
            (EngineError::UnknownRun("r".into()), Disposition::DeadLetter),
            (
                EngineError::UnknownNode {
                    run: "r".into(),
                    blueprint: "b".into(),
                    node: "n".into(),
                },
                Disposition::DeadLetter,
            ),
            (
                EngineError::NotRetryable {
                    run: "r".into(),
                    state: RunState::Running,
                },
                Disposition::DeadLetter,
            ),
        ];
        for (error, expected) in cases {
            assert_eq!(Disposition::of(&error), expected, "{error}");
        }
    }

    #[test]
    fn a_message_is_over_delivered_only_past_the_limit() {
        assert_eq!(over_delivered(5, 5), None);
        assert_eq!(
            over_delivered(6, 5).as_deref(),
            Some("delivered 6 times without completing (limit 5)")
        );
        assert_eq!(
            return_delay(Duration::from_secs(300)),
            Duration::from_secs(30)
        );
        assert_eq!(return_delay(Duration::from_secs(4)), Duration::from_secs(4));
    }
}
