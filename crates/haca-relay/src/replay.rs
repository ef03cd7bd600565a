//! Refusing replayed requests. OHTTP does not stop a relay (or anyone on the path) from
//! sending the same encapsulated request twice: it opens again. Every honest request carries
//! a fresh ephemeral key (`enc`), so a gateway that remembers the `enc` of each request it
//! opened, per key id, until that key is retired, recognises a replay (RFC 9458 section 6.5
//! discusses the gap). Record only after [`crate::decapsulate`] succeeded: forged bytes then
//! never take room.
//!
//! Memory is bounded: at most `capacity` entries per key id; past that the oldest are
//! forgotten (and could be replayed), so rotate keys faster than `capacity` requests arrive
//! on one key. [`ReplayGuard::forget_key`] drops a retired key's entries (call it with what
//! [`crate::KeyRing::prune`] returns).

use crate::{OhttpError, ResponseContext};
use std::collections::{HashMap, HashSet, VecDeque};

/// The `enc` values of one key id: for lookup, and oldest first.
type Seen = (HashSet<Vec<u8>>, VecDeque<Vec<u8>>);

/// The `enc` values seen per key id.
#[derive(Debug, Default)]
pub struct ReplayGuard {
    capacity: usize,
    seen: HashMap<u8, Seen>,
}

impl ReplayGuard {
    /// A guard that remembers up to `capacity` requests per key id.
    pub fn new(capacity: usize) -> ReplayGuard {
        ReplayGuard {
            capacity: capacity.max(1),
            seen: HashMap::new(),
        }
    }

    /// Records the request behind `ctx`; refuses it with [`OhttpError::Replayed`] when the
    /// same `enc` was recorded before under the same key id.
    pub fn check(&mut self, ctx: &ResponseContext) -> Result<(), OhttpError> {
        let key_id = ctx.header().key_id;
        let (set, order) = self.seen.entry(key_id).or_default();
        if !set.insert(ctx.enc().to_vec()) {
            return Err(OhttpError::Replayed { key_id });
        }
        order.push_back(ctx.enc().to_vec());
        while order.len() > self.capacity {
            if let Some(old) = order.pop_front() {
                set.remove(&old);
            }
        }
        Ok(())
    }

    /// Forgets every request recorded under these key ids (retired keys).
    pub fn forget_key(&mut self, key_ids: &[u8]) {
        for id in key_ids {
            self.seen.remove(id);
        }
    }

    /// How many requests are remembered under a key id.
    pub fn remembered(&self, key_id: u8) -> usize {
        self.seen.get(&key_id).map_or(0, |(_, order)| order.len())
    }
}
