//! The wall clock as records, stores and run lists keep time: Unix
//! milliseconds.

/// Milliseconds since the Unix epoch now (saturating far in the future).
pub fn unix_ms() -> i64 {
    i64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000)
        .unwrap_or(i64::MAX)
}
