//! The Lua scripts that create a run's progress hash and change it by
//! compare-and-set (see the `redis_store` module docs for the key layout),
//! and the reply of the update script.

/// Creates the record unless the key exists, and enters the run in the run
/// index.
/// KEYS[1] = progress key, KEYS[2] = run index; ARGV = record JSON, write
/// token, TTL seconds (0 = none), start time (Unix ms), run id.
/// Returns 1 when created (or already created by this very token), 0 when the key exists.
pub(super) const CREATE_SCRIPT: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then
  if redis.call('HGET', KEYS[1], 'w') == ARGV[2] then return 1 end
  return 0
end
redis.call('HSET', KEYS[1], 'v', 1, 'r', ARGV[1], 'w', ARGV[2])
if tonumber(ARGV[3]) > 0 then redis.call('EXPIRE', KEYS[1], ARGV[3]) end
redis.call('ZADD', KEYS[2], 'NX', ARGV[4], ARGV[5])
return 1
"#;

/// Compare-and-set on the version and the write token.
/// KEYS[1] = progress key; ARGV = expected version, expected write token
/// (empty when the hash has none), record JSON (empty: write nothing, only
/// compare), this write's token, TTL seconds (0 = none).
/// Returns the version now stored when written, or when it matched and
/// nothing was to be written, or when this very token wrote it already; -1
/// when the record does not exist; on a conflict, the current
/// `[v, r, w]` (`w` empty when absent).
pub(super) const UPDATE_SCRIPT: &str = r#"
local v = redis.call('HGET', KEYS[1], 'v')
if not v then return -1 end
local w = redis.call('HGET', KEYS[1], 'w') or ''
if v ~= ARGV[1] or w ~= ARGV[2] then
  if w == ARGV[4] then return tonumber(v) end
  return {v, redis.call('HGET', KEYS[1], 'r'), w}
end
if ARGV[3] == '' then return tonumber(v) end
v = redis.call('HINCRBY', KEYS[1], 'v', 1)
redis.call('HSET', KEYS[1], 'r', ARGV[3], 'w', ARGV[4])
if tonumber(ARGV[5]) > 0 then
  if redis.call('TTL', KEYS[1]) < 0 then redis.call('EXPIRE', KEYS[1], ARGV[5]) end
else
  redis.call('PERSIST', KEYS[1])
end
return v
"#;

/// What the update script answered.
pub(super) enum Cas {
    /// The version now stored (after this write, or the one compared).
    Written(i64),
    /// The record does not exist.
    Missing,
    /// Another state is current: its `v`, `r` (absent if the hash has
    /// none) and `w`.
    Conflict(i64, Option<String>, String),
}

impl redis::FromRedisValue for Cas {
    fn from_redis_value(value: redis::Value) -> Result<Self, redis::ParsingError> {
        match value {
            redis::Value::Int(-1) => Ok(Cas::Missing),
            redis::Value::Int(version) => Ok(Cas::Written(version)),
            redis::Value::Array(items) if items.len() == 3 => {
                let mut items = items.into_iter();
                let mut next = || items.next().unwrap_or_default();
                let version = redis::from_redis_value(next())?;
                let record = redis::from_redis_value(next())?;
                let token = redis::from_redis_value::<Option<String>>(next())?;
                Ok(Cas::Conflict(version, record, token.unwrap_or_default()))
            }
            other => Err(format!("unexpected reply of the update script: {other:?}").into()),
        }
    }
}
