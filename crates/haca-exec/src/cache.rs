//! A least-recently-used cache of loaded models, bounded by the bytes of their files.

use crate::{ExecError, OnnxModel};
use haca_core::BlobId;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

struct Entry {
    model: Arc<OnnxModel>,
    bytes: u64,
    last_used: u64,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<BlobId, Entry>,
    used: u64,
    tick: u64,
}

/// Loaded models by blob id. A model larger than the whole budget is still loaded and kept
/// alone, so that it can run at all.
pub struct ModelCache {
    capacity: u64,
    inner: Mutex<Inner>,
}

impl ModelCache {
    pub fn new(capacity_bytes: u64) -> Self {
        ModelCache {
            capacity: capacity_bytes,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// The cached model, or the one `load` returns (bytes of the file, then parsed).
    pub fn get_or_load(
        &self,
        id: &BlobId,
        load: impl FnOnce() -> Result<Vec<u8>, String>,
    ) -> Result<Arc<OnnxModel>, ExecError> {
        if let Some(m) = self.get(id) {
            return Ok(m);
        }
        // Load outside the lock: a big model must not stall runs of cached ones.
        let bytes = load().map_err(ExecError::Load)?;
        let model = Arc::new(OnnxModel::load(&bytes)?);
        let size = bytes.len() as u64;
        let mut inner = self.inner.lock().expect("cache lock");
        inner.tick += 1;
        let tick = inner.tick;
        if let Some(old) = inner.entries.insert(
            *id,
            Entry {
                model: model.clone(),
                bytes: size,
                last_used: tick,
            },
        ) {
            inner.used -= old.bytes;
        }
        inner.used += size;
        while inner.used > self.capacity && inner.entries.len() > 1 {
            let victim = *inner
                .entries
                .iter()
                .filter(|(k, _)| *k != id)
                .min_by_key(|(_, e)| e.last_used)
                .map(|(k, _)| k)
                .expect("more than one entry");
            let gone = inner.entries.remove(&victim).expect("victim present");
            inner.used -= gone.bytes;
            tracing::debug!(blob = %victim, "model cache: evicted");
        }
        Ok(model)
    }

    pub fn get(&self, id: &BlobId) -> Option<Arc<OnnxModel>> {
        let mut inner = self.inner.lock().expect("cache lock");
        inner.tick += 1;
        let tick = inner.tick;
        inner.entries.get_mut(id).map(|e| {
            e.last_used = tick;
            e.model.clone()
        })
    }

    pub fn contains(&self, id: &BlobId) -> bool {
        self.inner
            .lock()
            .expect("cache lock")
            .entries
            .contains_key(id)
    }

    /// Bytes currently held.
    pub fn used_bytes(&self) -> u64 {
        self.inner.lock().expect("cache lock").used
    }
}
