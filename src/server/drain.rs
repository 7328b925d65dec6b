//! The state of a shutdown. `Draining` is set once when a shutdown signal
//! arrives: `/readyz` then answers 503 so a probing balancer stops sending
//! new requests, and every HTTP/1 response carries `Connection: close` so
//! clients open their next connection to another replica instead of reusing
//! one that is about to close. `InFlight` counts the work a replica must
//! finish before its event streams and MCP tasks may be cancelled.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::sync::Notify;

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

/// Work in progress that shutdown waits for before it cancels MCP tasks:
/// every request other than a GET, from the moment its head is read until
/// its response body has been sent, and every accepted connection until its
/// first request arrives (the balancer opened it to send one). GET event
/// streams never end on their own and are not counted; shutdown ends them.
#[derive(Debug, Default)]
pub struct InFlight {
    count: AtomicUsize,
    idle: Notify,
}

/// One unit of [`InFlight`] work; dropping it ends the unit.
#[derive(Debug)]
pub struct Work(Arc<InFlight>);

impl InFlight {
    pub fn current(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    pub fn begin(self: &Arc<Self>) -> Work {
        self.count.fetch_add(1, Ordering::SeqCst);
        Work(self.clone())
    }

    /// Wait until nothing is in flight or `limit` passes.
    pub async fn drained(&self, limit: Duration) {
        let _ = tokio::time::timeout(limit, async {
            loop {
                let notified = self.idle.notified();
                if self.current() == 0 {
                    return;
                }
                notified.await;
            }
        })
        .await;
    }
}

impl Drop for Work {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
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

    #[tokio::test]
    async fn drained_waits_for_the_last_unit_of_work() {
        let in_flight = Arc::new(InFlight::default());
        let first = in_flight.begin();
        let second = in_flight.begin();
        assert_eq!(in_flight.current(), 2);
        let waiter = {
            let in_flight = in_flight.clone();
            tokio::spawn(async move { in_flight.drained(Duration::from_secs(30)).await })
        };
        drop(first);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "returned with one unit left");
        drop(second);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(in_flight.current(), 0);
    }

    #[tokio::test]
    async fn drained_gives_up_at_its_limit() {
        let in_flight = Arc::new(InFlight::default());
        let _stuck = in_flight.begin();
        in_flight.drained(Duration::from_millis(50)).await;
        assert_eq!(in_flight.current(), 1);
    }
}
