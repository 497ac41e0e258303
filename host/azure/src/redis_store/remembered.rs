//! The records a store remembers ([`Memory`]), so that an update of a run
//! it read or wrote lately needs no read first (see the `redis_store`
//! module docs, "Remembered records").

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use super::Seen;

/// The last state of each live run's hash a store read or wrote, at most
/// `runs` of them with records of at most `bytes` of JSON together: two
/// generations of up to half that each; a state goes into the young one
/// (also when it is looked up in the old one), and when the young one is
/// full it becomes the old one and the old one is dropped. Approximately
/// least recently used, in constant time per operation.
pub(super) struct Memory {
    /// Bounds of one generation.
    runs: usize,
    bytes: usize,
    generations: Mutex<Generations>,
}

#[derive(Default)]
pub(super) struct Generations {
    pub(super) young: Generation,
    pub(super) old: Generation,
}

#[derive(Default)]
pub(super) struct Generation {
    states: HashMap<String, Seen>,
    /// Total weight of `states` (see [`weight`]).
    pub(super) bytes: usize,
}

/// What a remembered state counts against the byte bound.
fn weight(run_id: &str, seen: &Seen) -> usize {
    run_id.len() + seen.token.len() + seen.size
}

impl Generation {
    fn remove(&mut self, run_id: &str) -> Option<Seen> {
        let seen = self.states.remove(run_id)?;
        self.bytes -= weight(run_id, &seen);
        Some(seen)
    }
}

impl Memory {
    pub(super) fn new(runs: usize, bytes: usize) -> Self {
        Self {
            runs: runs.div_ceil(2),
            bytes: bytes / 2,
            generations: Mutex::default(),
        }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Generations> {
        // Every change below leaves `Generations` consistent before it can panic.
        self.generations
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(super) fn get(&self, run_id: &str) -> Option<Seen> {
        if self.runs == 0 {
            return None;
        }
        let mut generations = self.lock();
        if let Some(seen) = generations.young.states.get(run_id) {
            return Some(seen.clone());
        }
        let seen = generations.old.remove(run_id)?;
        self.insert(&mut generations, run_id, seen.clone());
        Some(seen)
    }

    pub(super) fn put(&self, run_id: &str, seen: Seen) {
        if self.runs == 0 {
            return;
        }
        let mut generations = self.lock();
        generations.old.remove(run_id);
        generations.young.remove(run_id);
        // A record this large would push out many others.
        if weight(run_id, &seen) <= self.bytes / 4 {
            self.insert(&mut generations, run_id, seen);
        }
    }

    pub(super) fn forget(&self, run_id: &str) {
        if self.runs == 0 {
            return;
        }
        let mut generations = self.lock();
        generations.old.remove(run_id);
        generations.young.remove(run_id);
    }

    /// Adds a state of a run that neither generation holds.
    fn insert(&self, generations: &mut Generations, run_id: &str, seen: Seen) {
        let added = weight(run_id, &seen);
        let young = &generations.young;
        if young.states.len() >= self.runs || young.bytes + added > self.bytes {
            generations.old = std::mem::take(&mut generations.young);
        }
        generations.young.bytes += added;
        generations.young.states.insert(run_id.to_owned(), seen);
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        let generations = self.lock();
        generations.young.states.len() + generations.old.states.len()
    }
}
