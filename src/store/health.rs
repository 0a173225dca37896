//! Whether the store can write, as the writer last found out: `/readyz`, the metrics and the
//! shutdown message read it, so none of them says "ready" or "committed" while nothing can be
//! stored (a full disk, a write lock held by another process, a database file deleted or
//! replaced under the daemon).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

#[derive(Debug)]
pub struct Health {
    writable: AtomicBool,
    replaced: AtomicBool,
    retained: AtomicUsize,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            writable: AtomicBool::new(true),
            replaced: AtomicBool::new(false),
            retained: AtomicUsize::new(0),
        }
    }
}

impl Health {
    /// The last commit succeeded.
    pub fn writable(&self) -> bool {
        self.writable.load(Ordering::Acquire)
    }

    /// The database file the writer opened was deleted or replaced; nothing is written until
    /// regwatch is restarted (and then it refuses to begin a new trail silently).
    pub fn replaced(&self) -> bool {
        self.replaced.load(Ordering::Acquire)
    }

    /// regwatch's own events (start, reload, stop) kept for the next commit after one failed.
    pub fn retained(&self) -> usize {
        self.retained.load(Ordering::Acquire)
    }

    pub(super) fn set_writable(&self, ok: bool) {
        self.writable.store(ok, Ordering::Release);
    }

    pub(super) fn set_replaced(&self) {
        self.replaced.store(true, Ordering::Release);
        self.set_writable(false);
    }

    pub(super) fn set_retained(&self, n: usize) {
        self.retained.store(n, Ordering::Release);
    }
}
