//! Time as a parameter. Domain code asks a [`Clock`] instead of the system,
//! so tests of windows (grace periods, expiry, lockouts, refetch intervals)
//! move a [`ManualClock`] forward instead of sleeping.

use std::{
    fmt,
    sync::{
        Arc,
        atomic::{AtomicI64, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

/// Wall-clock seconds (token `iat`/`exp`, stored expiry) and a monotonic
/// instant (in-memory windows and caches) from one source.
pub trait Clock: Send + Sync + fmt::Debug {
    /// Seconds since the Unix epoch.
    fn now(&self) -> i64;
    /// A monotonic instant; only differences between two of them mean anything.
    fn instant(&self) -> Instant;
}

pub type SharedClock = Arc<dyn Clock>;

/// The real clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0)
    }

    fn instant(&self) -> Instant {
        Instant::now()
    }
}

/// The real clock, shared.
pub fn system() -> SharedClock {
    Arc::new(SystemClock)
}

/// A clock that moves only when told to: starts at the real time and
/// [`ManualClock::advance`] moves both readings together.
#[derive(Debug)]
pub struct ManualClock {
    start_epoch: i64,
    start_instant: Instant,
    offset_ms: AtomicI64,
}

impl ManualClock {
    pub fn new() -> Arc<ManualClock> {
        Arc::new(ManualClock {
            start_epoch: SystemClock.now(),
            start_instant: Instant::now(),
            offset_ms: AtomicI64::new(0),
        })
    }

    /// Move time forward by `by`.
    pub fn advance(&self, by: Duration) {
        let ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.offset_ms.fetch_add(ms, Ordering::SeqCst);
    }

    fn offset(&self) -> Duration {
        Duration::from_millis(self.offset_ms.load(Ordering::SeqCst).max(0) as u64)
    }
}

impl Clock for ManualClock {
    fn now(&self) -> i64 {
        self.start_epoch + self.offset().as_secs() as i64
    }

    fn instant(&self) -> Instant {
        self.start_instant + self.offset()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_both_readings_only_when_advanced() {
        let clock = ManualClock::new();
        let (epoch, instant) = (clock.now(), clock.instant());
        assert_eq!(clock.now(), epoch);
        clock.advance(Duration::from_secs(90));
        assert_eq!(clock.now(), epoch + 90);
        assert_eq!(clock.instant() - instant, Duration::from_secs(90));
    }

    #[test]
    fn the_system_clock_is_near_the_real_time() {
        let real = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        assert!((SystemClock.now() - real).abs() <= 1);
    }
}
