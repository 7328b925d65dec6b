//! Whether this replica is draining: set once when a shutdown signal
//! arrives. `/readyz` then answers 503 so the balancer stops sending new
//! requests, and every HTTP/1 response carries `Connection: close` so
//! clients open their next connection to another replica instead of
//! reusing one that is about to close.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

/// Shared by the accept loop, the readiness endpoint and `App::serve`.
#[derive(Clone, Debug, Default)]
pub struct Draining(Arc<AtomicBool>);

impl Draining {
    /// Start draining (idempotent; there is no way back).
    pub fn start(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_clone_sees_the_start() {
        let a = Draining::default();
        let b = a.clone();
        assert!(!b.is_draining());
        a.start();
        assert!(b.is_draining());
    }
}
