//! Fixed-window counters per key (client address, user name), in memory
//! per replica: enough to slow brute force and registration floods.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

pub struct WindowLimiter {
    limit: u32,
    window: Duration,
    counts: Mutex<HashMap<String, (u32, Instant)>>,
}

impl WindowLimiter {
    pub fn new(limit: u32, window: Duration) -> WindowLimiter {
        WindowLimiter {
            limit,
            window,
            counts: Mutex::new(HashMap::new()),
        }
    }

    /// Has `key` used up its allowance in the current window?
    pub fn exhausted(&self, key: &str) -> bool {
        let now = Instant::now();
        let Ok(counts) = self.counts.lock() else {
            return false;
        };
        counts
            .get(key)
            .is_some_and(|(n, start)| now.duration_since(*start) < self.window && *n >= self.limit)
    }

    /// Count one event for `key`; `false` if it is over the limit.
    pub fn hit(&self, key: &str) -> bool {
        let now = Instant::now();
        let Ok(mut counts) = self.counts.lock() else {
            return true;
        };
        if counts.len() > 100_000 {
            let window = self.window;
            counts.retain(|_, (_, start)| now.duration_since(*start) < window);
        }
        let entry = counts.entry(key.to_owned()).or_insert((0, now));
        if now.duration_since(entry.1) >= self.window {
            *entry = (0, now);
        }
        entry.0 += 1;
        entry.0 <= self.limit
    }

    pub fn clear(&self, key: &str) {
        if let Ok(mut counts) = self.counts.lock() {
            counts.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_per_key() {
        let l = WindowLimiter::new(2, Duration::from_secs(60));
        assert!(l.hit("a"));
        assert!(l.hit("a"));
        assert!(!l.hit("a"));
        assert!(l.exhausted("a"));
        assert!(l.hit("b"));
        l.clear("a");
        assert!(!l.exhausted("a"));
    }
}
