//! Fixed-window counters per key (client address, account), in memory
//! per replica: enough to slow brute force and registration floods.
//! [`LoginLimits`] combines them for password sign-ins.

use crate::clock::SharedClock;
use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

/// Entries kept before expired ones are pruned (each is a short key).
const PRUNE_ABOVE: usize = 100_000;

pub struct WindowLimiter {
    limit: u32,
    window: Duration,
    counts: Mutex<HashMap<String, (u32, Instant)>>,
    /// Where `hit` and `exhausted` read the time (tests move a manual clock).
    clock: SharedClock,
}

/// One attempt taken from a key's allowance, to give back if it succeeded.
#[derive(Debug)]
pub struct Ticket {
    key: String,
    window_start: Instant,
}

impl WindowLimiter {
    pub fn new(limit: u32, window: Duration) -> WindowLimiter {
        WindowLimiter {
            limit,
            window,
            counts: Mutex::new(HashMap::new()),
            clock: crate::clock::system(),
        }
    }

    /// Read the time from `clock` instead of the system.
    pub fn with_clock(mut self, clock: SharedClock) -> WindowLimiter {
        self.clock = clock;
        self
    }

    /// Has `key` used up its allowance in the current window?
    pub fn exhausted(&self, key: &str) -> bool {
        let now = self.clock.instant();
        let Ok(counts) = self.counts.lock() else {
            return false;
        };
        counts
            .get(key)
            .is_some_and(|(n, start)| now.duration_since(*start) < self.window && *n >= self.limit)
    }

    /// Count one event for `key`; `false` if it is over the limit.
    pub fn hit(&self, key: &str) -> bool {
        let now = self.clock.instant();
        let Ok(mut counts) = self.counts.lock() else {
            return true;
        };
        self.prune(&mut counts, now);
        let entry = counts.entry(key.to_owned()).or_insert((0, now));
        if now.duration_since(entry.1) >= self.window {
            *entry = (0, now);
        }
        entry.0 += 1;
        entry.0 <= self.limit
    }

    /// Take one attempt from `key`'s allowance before doing the work it
    /// guards, in one step under the lock, so concurrent callers cannot all
    /// pass a check that only later counts them. `Err` is how long until
    /// the window ends.
    pub fn acquire(&self, key: &str, now: Instant) -> Result<Ticket, Duration> {
        let Ok(mut counts) = self.counts.lock() else {
            // A poisoned lock fails closed: no attempt without a count.
            return Err(self.window);
        };
        self.prune(&mut counts, now);
        let entry = counts.entry(key.to_owned()).or_insert((0, now));
        if now.duration_since(entry.1) >= self.window {
            *entry = (0, now);
        }
        if entry.0 >= self.limit {
            return Err(self.window.saturating_sub(now.duration_since(entry.1)));
        }
        entry.0 += 1;
        Ok(Ticket {
            key: key.to_owned(),
            window_start: entry.1,
        })
    }

    /// Give an attempt back (it succeeded); a no-op once its window is over.
    pub fn release(&self, ticket: Ticket) {
        if let Ok(mut counts) = self.counts.lock()
            && let Some(entry) = counts.get_mut(&ticket.key)
            && entry.1 == ticket.window_start
        {
            entry.0 = entry.0.saturating_sub(1);
        }
    }

    pub fn clear(&self, key: &str) {
        if let Ok(mut counts) = self.counts.lock() {
            counts.remove(key);
        }
    }

    fn prune(&self, counts: &mut HashMap<String, (u32, Instant)>, now: Instant) {
        if counts.len() > PRUNE_ABOVE {
            let window = self.window;
            counts.retain(|_, (_, start)| now.duration_since(*start) < window);
        }
    }
}

/// Concurrent holders per key, at most `max` each.
struct InFlight {
    max: u32,
    counts: Mutex<HashMap<String, u32>>,
}

struct InFlightGuard<'a> {
    owner: &'a InFlight,
    key: String,
}

impl InFlight {
    fn enter(&self, key: &str) -> Option<InFlightGuard<'_>> {
        let mut counts = self.counts.lock().ok()?;
        let n = counts.entry(key.to_owned()).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(InFlightGuard {
            owner: self,
            key: key.to_owned(),
        })
    }
}

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        if let Ok(mut counts) = self.owner.counts.lock()
            && let Some(n) = counts.get_mut(&self.key)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

/// Password checks running at once per address and per account: a burst
/// waits for nobody, it is refused (the allowance bounds the total, this
/// bounds the CPU one client can hold at a time).
const MAX_IN_FLIGHT: u32 = 4;
/// How long an address that signed in to an account stays exempt from that
/// account's shared allowance.
const KNOWN_GOOD_FOR: Duration = Duration::from_secs(30 * 86_400);

/// The limits on password sign-ins. Every attempt is counted *before* its
/// password is checked; a success gives its own attempt back.
///
/// - Per client address: `per_address` attempts per window, whatever the
///   account. This is what stops one client's guessing.
/// - Per account, over all addresses: `per_account` attempts per window,
///   which bounds guessing spread over many addresses. An address from
///   which the account signed in before (in the last 30 days, on this
///   replica) is exempt from it, so a flood from elsewhere cannot keep the
///   owner out from where they usually sign in.
/// - At most [`MAX_IN_FLIGHT`] checks at once per address and per account.
pub struct LoginLimits {
    per_address: WindowLimiter,
    per_account: WindowLimiter,
    in_flight: InFlight,
    known_good: Mutex<HashMap<(String, String), Instant>>,
}

/// Why a sign-in attempt is refused before its password is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginRefusal {
    /// The allowance is used up; it renews after this long.
    Exhausted(Duration),
    /// Too many checks for this address or account are running right now.
    Busy,
}

/// An attempt that passed the limits; say how it ended.
pub struct LoginAttempt<'a> {
    limits: &'a LoginLimits,
    account: String,
    address: String,
    tickets: Vec<(&'a WindowLimiter, Ticket)>,
    _guards: [InFlightGuard<'a>; 2],
}

impl LoginLimits {
    pub fn new(per_address: u32, per_account: u32, window: Duration) -> LoginLimits {
        LoginLimits {
            per_address: WindowLimiter::new(per_address, window),
            per_account: WindowLimiter::new(per_account, window),
            in_flight: InFlight {
                max: MAX_IN_FLIGHT,
                counts: Mutex::new(HashMap::new()),
            },
            known_good: Mutex::new(HashMap::new()),
        }
    }

    /// Admit one attempt for `account` (a fixed-length digest of what was
    /// typed, so no input size reaches memory) from `address`, or refuse.
    pub fn begin(
        &self,
        account: &str,
        address: &str,
        now: Instant,
    ) -> Result<LoginAttempt<'_>, LoginRefusal> {
        let by_address = self
            .in_flight
            .enter(&format!("a:{address}"))
            .ok_or(LoginRefusal::Busy)?;
        let by_account = self
            .in_flight
            .enter(&format!("u:{account}"))
            .ok_or(LoginRefusal::Busy)?;
        let mut tickets = vec![(
            &self.per_address,
            self.per_address
                .acquire(address, now)
                .map_err(LoginRefusal::Exhausted)?,
        )];
        if !self.is_known_good(account, address, now) {
            match self.per_account.acquire(account, now) {
                Ok(ticket) => tickets.push((&self.per_account, ticket)),
                Err(wait) => {
                    for (limiter, ticket) in tickets {
                        limiter.release(ticket);
                    }
                    return Err(LoginRefusal::Exhausted(wait));
                }
            }
        }
        Ok(LoginAttempt {
            limits: self,
            account: account.to_owned(),
            address: address.to_owned(),
            tickets,
            _guards: [by_address, by_account],
        })
    }

    fn is_known_good(&self, account: &str, address: &str, now: Instant) -> bool {
        let Ok(known) = self.known_good.lock() else {
            return false;
        };
        known
            .get(&(account.to_owned(), address.to_owned()))
            .is_some_and(|at| now.duration_since(*at) < KNOWN_GOOD_FOR)
    }
}

impl LoginAttempt<'_> {
    /// The password was right: the attempt is given back and the address
    /// becomes known good for the account. Earlier failures stay counted,
    /// so signing in to one's own account never resets a guessing budget.
    pub fn succeeded(self, now: Instant) {
        let LoginAttempt {
            limits,
            account,
            address,
            tickets,
            _guards,
        } = self;
        for (limiter, ticket) in tickets {
            limiter.release(ticket);
        }
        if let Ok(mut known) = limits.known_good.lock() {
            if known.len() > PRUNE_ABOVE {
                known.retain(|_, at| now.duration_since(*at) < KNOWN_GOOD_FOR);
            }
            known.insert((account, address), now);
        }
    }

    /// The password was wrong: the attempt stays counted.
    pub fn failed(self) {}

    /// No password was checked after all: the attempt is given back.
    pub fn abandoned(self) {
        for (limiter, ticket) in self.tickets {
            limiter.release(ticket);
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

    #[test]
    fn a_window_ends_on_the_limiters_clock() {
        let clock = crate::clock::ManualClock::new();
        let l = WindowLimiter::new(1, Duration::from_secs(60)).with_clock(clock.clone());
        assert!(l.hit("a"));
        assert!(!l.hit("a"));
        clock.advance(Duration::from_secs(59));
        assert!(l.exhausted("a"));
        clock.advance(Duration::from_secs(1));
        assert!(!l.exhausted("a"));
        assert!(l.hit("a"));
    }

    #[test]
    fn acquire_counts_before_the_work_and_release_gives_back() {
        let t0 = Instant::now();
        let l = WindowLimiter::new(2, Duration::from_secs(60));
        let first = l.acquire("k", t0).unwrap();
        let _second = l.acquire("k", t0).unwrap();
        // Both still in progress: the third is refused, with the time left.
        assert_eq!(
            l.acquire("k", t0 + Duration::from_secs(20)).unwrap_err(),
            Duration::from_secs(40)
        );
        l.release(first);
        assert!(l.acquire("k", t0).is_ok());
        // A new window starts afresh, and an old ticket cannot free a slot in it.
        let late = t0 + Duration::from_secs(61);
        let old = l.acquire("j", t0).unwrap();
        let _ = l.acquire("j", t0).unwrap();
        let _ = l.acquire("j", late).unwrap();
        let _ = l.acquire("j", late).unwrap();
        l.release(old);
        assert!(l.acquire("j", late).is_err());
    }

    #[test]
    fn a_flood_on_an_account_leaves_the_owners_known_address_open() {
        let t0 = Instant::now();
        let limits = LoginLimits::new(3, 5, Duration::from_secs(300));
        limits.begin("admin", "home", t0).unwrap().succeeded(t0);
        // Attackers from many addresses use up the account's allowance.
        for i in 0..5 {
            limits
                .begin("admin", &format!("attacker-{i}"), t0)
                .unwrap()
                .failed();
        }
        assert!(matches!(
            limits.begin("admin", "attacker-9", t0),
            Err(LoginRefusal::Exhausted(_))
        ));
        // The owner's usual address still gets its own allowance.
        limits.begin("admin", "home", t0).unwrap().succeeded(t0);
        // A success does not reset an address's failures: signing in to
        // one's own account never buys more guesses against another.
        for _ in 0..3 {
            limits.begin("bob", "home", t0).unwrap().failed();
        }
        assert!(matches!(
            limits.begin("admin", "home", t0),
            Err(LoginRefusal::Exhausted(_))
        ));
    }

    #[test]
    fn checks_in_flight_are_capped_per_address_and_account() {
        let t0 = Instant::now();
        let limits = LoginLimits::new(100, 100, Duration::from_secs(300));
        let held: Vec<_> = (0..MAX_IN_FLIGHT)
            .map(|i| limits.begin("carol", &format!("a{i}"), t0).unwrap())
            .collect();
        assert_eq!(
            limits.begin("carol", "a9", t0).err(),
            Some(LoginRefusal::Busy)
        );
        drop(held);
        assert!(limits.begin("carol", "a9", t0).is_ok());
    }
}
