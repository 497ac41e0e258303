//! Unit tests of the parts that need no server: URL redaction, the
//! remembered-record bounds, and the update script's replies.

use super::*;

#[test]
fn redacts_passwords() {
    assert_eq!(
        redact("redis://:s3cret@cache.example:6380/2"),
        "redis://:***@cache.example:6380/2"
    );
    assert_eq!(
        redact("rediss://user:pw@host:6380"),
        "rediss://user:***@host:6380"
    );
    assert_eq!(redact("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
    assert_eq!(redact("not a url :pw@"), "<unparseable URL>");
}

fn state(version: i64, size: usize) -> Seen {
    Seen {
        version,
        token: String::new(),
        record: Arc::new(RunProgress::new(
            "run",
            "bp",
            flowcraft_core::runner::Pins::default(),
            10,
        )),
        size,
    }
}

#[test]
fn memory_is_bounded_by_runs() {
    let memory = Memory::new(4, 1 << 20);
    for i in 0..100 {
        memory.put(&format!("run-{i}"), state(i, 10));
        assert!(memory.len() <= 4, "{} states after {i}", memory.len());
    }
    // The latest ones are kept, the oldest dropped.
    assert_eq!(memory.get("run-99").map(|s| s.version), Some(99));
    assert!(memory.get("run-0").is_none());
    // Looking a state up keeps it: run-98 outlives the rotations that
    // drop its peers.
    for i in 100..110 {
        assert_eq!(memory.get("run-98").map(|s| s.version), Some(98));
        memory.put(&format!("run-{i}"), state(i, 10));
    }
    assert!(memory.get("run-98").is_some());
    assert!(memory.get("run-101").is_none());
    // A newer state replaces the remembered one; forgetting removes it.
    memory.put("run-98", state(120, 10));
    assert_eq!(memory.get("run-98").map(|s| s.version), Some(120));
    memory.forget("run-98");
    assert!(memory.get("run-98").is_none());
}

#[test]
fn memory_is_bounded_by_bytes() {
    let memory = Memory::new(1000, 8000);
    for i in 0..100 {
        memory.put(&format!("run-{i:02}"), state(i, 394));
        let generations = memory.lock();
        assert!(generations.young.bytes + generations.old.bytes <= 8000);
    }
    // 400 bytes each: at most 20 fit.
    assert!(memory.len() <= 20 && memory.len() >= 10, "{}", memory.len());
    // Too large for the bound: not remembered, and not kept in an old state either.
    memory.put("run-99", state(7, 1500));
    assert!(memory.get("run-99").is_none());
    assert_eq!(memory.get("run-98").map(|s| s.version), Some(98));
}

#[test]
fn memory_can_be_off() {
    let memory = Memory::new(0, 1 << 20);
    memory.put("run", state(1, 10));
    assert!(memory.get("run").is_none());
    assert_eq!(memory.len(), 0);
}

#[test]
fn update_replies_parse() {
    use redis::{FromRedisValue, Value};
    assert!(matches!(
        Cas::from_redis_value(Value::Int(-1)),
        Ok(Cas::Missing)
    ));
    assert!(matches!(
        Cas::from_redis_value(Value::Int(7)),
        Ok(Cas::Written(7))
    ));
    let conflict = Value::Array(vec![
        Value::BulkString(b"5".to_vec()),
        Value::BulkString(b"{}".to_vec()),
        Value::BulkString(b"tok".to_vec()),
    ]);
    match Cas::from_redis_value(conflict) {
        Ok(Cas::Conflict(5, Some(record), token)) => {
            assert_eq!((record.as_str(), token.as_str()), ("{}", "tok"));
        }
        _ => panic!("not a conflict"),
    }
    let gone = Value::Array(vec![
        Value::BulkString(b"5".to_vec()),
        Value::Nil,
        Value::BulkString(Vec::new()),
    ]);
    assert!(matches!(
        Cas::from_redis_value(gone),
        Ok(Cas::Conflict(5, None, token)) if token.is_empty()
    ));
    assert!(Cas::from_redis_value(Value::Okay).is_err());
}

#[test]
fn progress_keys_are_new_names() {
    assert_eq!(progress_key("run-1"), "flowcraft:progress:run-1");
}
