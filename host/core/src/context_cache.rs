//! A worker's memory of the contexts it wrote last, so that the next job of
//! the same run on the same worker skips reading the context store.
//!
//! Every context write of the engine is followed by a settlement of the run's
//! progress record, which counts them (`RunProgress::settled`). An entry is
//! the context as it stood after settlement `n`; a job whose view of the
//! progress record shows `settled == n` may use it instead of a read. A
//! different count means someone else settled since: the job reads the store.
//! Writers outside the engine (an upstream TypeScript worker in a mixed fleet)
//! do not count their writes, so such deployments switch the cache off.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use crate::context::ContextMap;

/// Remembered contexts by run, the oldest dropped beyond `capacity`.
#[derive(Debug, Default)]
pub struct ContextCache {
    capacity: usize,
    entries: Mutex<Entries>,
}

#[derive(Debug, Default)]
struct Entries {
    by_run: HashMap<String, (u64, Arc<ContextMap>)>,
    order: VecDeque<String>,
}

impl ContextCache {
    /// A cache of up to `capacity` runs (0 turns it off).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            entries: Mutex::default(),
        }
    }

    pub fn is_enabled(&self) -> bool {
        self.capacity > 0
    }

    /// The context of `run_id` after settlement `settled`, if remembered.
    pub fn get(&self, run_id: &str, settled: u64) -> Option<Arc<ContextMap>> {
        let entries = self.lock();
        match entries.by_run.get(run_id) {
            Some((version, context)) if *version == settled => Some(context.clone()),
            _ => None,
        }
    }

    /// Remembers `context` as the context of `run_id` after settlement `settled`.
    pub fn put(&self, run_id: &str, settled: u64, context: Arc<ContextMap>) {
        if !self.is_enabled() {
            return;
        }
        let mut entries = self.lock();
        if entries
            .by_run
            .insert(run_id.to_owned(), (settled, context))
            .is_none()
        {
            entries.order.push_back(run_id.to_owned());
        }
        while entries.order.len() > self.capacity {
            if let Some(oldest) = entries.order.pop_front() {
                entries.by_run.remove(&oldest);
            }
        }
    }

    /// Forgets `run_id` (it ended).
    pub fn forget(&self, run_id: &str) {
        let mut entries = self.lock();
        if entries.by_run.remove(run_id).is_some() {
            entries.order.retain(|run| run != run_id);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context(value: i64) -> Arc<ContextMap> {
        let mut map = ContextMap::new();
        map.insert("v".into(), serde_json::json!(value).into());
        Arc::new(map)
    }

    #[test]
    fn an_entry_serves_only_its_settlement_count() {
        let cache = ContextCache::new(2);
        cache.put("r", 3, context(1));
        assert_eq!(cache.get("r", 3).unwrap()["v"].json(), "1");
        assert!(cache.get("r", 4).is_none(), "someone settled since");
        cache.put("r", 4, context(2));
        assert_eq!(cache.get("r", 4).unwrap()["v"].json(), "2");
    }

    #[test]
    fn the_oldest_runs_are_dropped_and_ended_runs_forgotten() {
        let cache = ContextCache::new(2);
        cache.put("a", 1, context(1));
        cache.put("b", 1, context(1));
        cache.put("c", 1, context(1));
        assert!(cache.get("a", 1).is_none());
        assert!(cache.get("c", 1).is_some());
        cache.forget("c");
        assert!(cache.get("c", 1).is_none());
    }

    #[test]
    fn capacity_zero_remembers_nothing() {
        let cache = ContextCache::new(0);
        cache.put("r", 1, context(1));
        assert!(cache.get("r", 1).is_none());
    }
}
