//! When the store counts as down: a judgement over several probes, not one.
//!
//! A probe that waits for a pooled connection can miss its deadline while
//! the store is fine (a replica that has just started opens its PostgreSQL
//! connections under load). Declaring the store down on one slow probe made
//! every MCP request on that replica 503 for a moment after each restart, so
//! it takes [`FAILURES_TO_DOWN`] failed probes in a row; one success is
//! enough to be up again.

/// Failed probes in a row before the store counts as unreachable.
pub const FAILURES_TO_DOWN: u32 = 3;

#[derive(Debug)]
pub struct StoreHealth {
    up: bool,
    failures_in_a_row: u32,
}

impl Default for StoreHealth {
    fn default() -> Self {
        StoreHealth {
            up: true,
            failures_in_a_row: 0,
        }
    }
}

impl StoreHealth {
    /// Record one probe; the verdict after it.
    pub fn record(&mut self, probe_ok: bool) -> bool {
        if probe_ok {
            self.failures_in_a_row = 0;
            self.up = true;
        } else {
            self.failures_in_a_row = self.failures_in_a_row.saturating_add(1);
            if self.failures_in_a_row >= FAILURES_TO_DOWN {
                self.up = false;
            }
        }
        self.up
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_slow_probe_does_not_take_the_store_down_but_several_in_a_row_do() {
        let mut health = StoreHealth::default();
        assert!(health.record(false));
        assert!(health.record(true));
        for _ in 1..FAILURES_TO_DOWN {
            assert!(health.record(false));
        }
        assert!(!health.record(false));
        assert!(!health.record(false));
        assert!(health.record(true), "one success is enough to be up again");
    }
}
