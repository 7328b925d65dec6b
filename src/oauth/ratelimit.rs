//! Fixed-window counters per key (client address, account), kept in the
//! store so every replica counts against one budget: N replicas do not give
//! an attacker N times the allowance. [`LoginLimits`] combines them for
//! password sign-ins.
//!
//! A store that cannot be reached fails closed: the caller refuses the
//! request (`Err(StoreError)`) rather than serve it uncounted. What is kept
//! in memory can refuse more, never admit more than the store allows: the
//! cap on password checks running at once in this process, and the events a
//! [`WindowLimiter`] with a large limit took from the store ahead (a lease).

use crate::{
    clock::SharedClock,
    store::{Store, StoreError},
};
use std::{collections::HashMap, sync::Mutex, time::Duration};

/// One limit (`name`: what it counts, which prefixes its keys in the store).
pub struct WindowLimiter {
    name: &'static str,
    limit: u32,
    window: Duration,
    store: Store,
    /// Where windows are read (tests move a manual clock).
    clock: SharedClock,
    /// Events of [`WindowLimiter::hit`] counted in the store ahead of use,
    /// by store key.
    leases: Mutex<HashMap<String, Lease>>,
}

/// Events this replica counted in the store for a key's window and has not
/// used yet. Every replica's leases come out of the one count in the store,
/// so together they never exceed the limit; a lease nobody uses (its
/// replica stopped, or the window ended) is budget lost, never gained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Lease {
    window_start: i64,
    left: u32,
}

impl Lease {
    /// Whether the lease's window is still on at `now`. The store starts the
    /// window over once `now - window` reaches its start: from then on the
    /// lease's events belong to a past window (a margin earlier, for the
    /// other replicas' clocks).
    fn live(&self, now: i64, window: i64) -> bool {
        let margin = LEASE_CLOCK_MARGIN_SECS.min(window / 4);
        self.window_start > now - window + margin
    }
}

/// What [`WindowLimiter::hit`] does next.
enum NextHit {
    /// It used an event this replica had leased.
    Leased,
    /// It asks the store for this many events.
    AskStore(u32),
}

/// A lease is at most this fraction of the limit. The default limits (60 a
/// minute) lease nothing, so each event is a store write as before; a limit
/// raised for a busy deployment (thousands a minute from one address, say
/// behind a NAT) costs a write per 1/32 of it. With N replicas at most
/// N - 1 leases' worth of a window can sit unused on other replicas while
/// one replica refuses: the budget shrinks by that much, never grows.
const LEASE_PARTS: u32 = 32;
/// Keys holding a lease at once; beyond that, events are counted one by one
/// again (as without leases), so many addresses cannot grow the table.
const MAX_LEASES: usize = 4096;
/// A lease ends this much (at most a quarter of the window) before its
/// window does: the store's window restarts on the clock of whichever
/// replica hits first, and a replica whose clock is behind must not spend
/// a past window's lease in the next one.
const LEASE_CLOCK_MARGIN_SECS: i64 = 2;

/// One attempt taken from a key's allowance, to give back if it succeeded.
#[derive(Debug)]
pub struct Ticket {
    key: String,
    window_start: i64,
}

impl WindowLimiter {
    pub fn new(name: &'static str, limit: u32, window: Duration, store: Store) -> WindowLimiter {
        WindowLimiter {
            name,
            limit,
            window,
            store,
            clock: crate::clock::system(),
            leases: Mutex::new(HashMap::new()),
        }
    }

    /// Read the time from `clock` instead of the system.
    pub fn with_clock(mut self, clock: SharedClock) -> WindowLimiter {
        self.clock = clock;
        self
    }

    fn key(&self, key: &str) -> String {
        format!("{}|{key}", self.name)
    }

    fn window_secs(&self) -> i64 {
        i64::try_from(self.window.as_secs())
            .unwrap_or(i64::MAX)
            .max(1)
    }

    /// Count one event for `key`; `false` if it is over the limit.
    ///
    /// With a limit of at least [`LEASE_PARTS`] * 2 the store is asked for a
    /// lease of `limit / LEASE_PARTS` events at once and the rest are used
    /// from memory until the window ends; the store still counts every one
    /// of them, so the replicas together admit at most `limit`.
    pub async fn hit(&self, key: &str) -> Result<bool, StoreError> {
        let key = self.key(key);
        let now = self.clock.now();
        let window = self.window_secs();
        let want = match self.use_lease(&key, now, window) {
            NextHit::Leased => return Ok(true),
            NextHit::AskStore(want) => want,
        };
        let counted = self
            .store
            .hit_window(&key, i64::from(want), window, now)
            .await?;
        // The events this write counted are the last `want` of the count;
        // those at or below the limit are this replica's.
        let before = counted.count - i64::from(want);
        let granted = (i64::from(self.limit) - before).clamp(0, i64::from(want));
        if granted == 0 {
            return Ok(false);
        }
        if granted > 1 {
            let left = u32::try_from(granted - 1).unwrap_or(0);
            self.keep_lease(key, counted.window_start, left);
        }
        Ok(true)
    }

    /// Use one leased event for `key` if its window is still on; else how
    /// many events to ask the store for: a lease when the limit is large
    /// enough and the table has room (after forgetting ended leases), else 1.
    fn use_lease(&self, key: &str, now: i64, window: i64) -> NextHit {
        let lease = self.limit / LEASE_PARTS;
        if lease <= 1 {
            return NextHit::AskStore(1);
        }
        let Ok(mut leases) = self.leases.lock() else {
            return NextHit::AskStore(1);
        };
        if let Some(held) = leases.get_mut(key) {
            if held.live(now, window) && held.left > 0 {
                held.left -= 1;
                if held.left == 0 {
                    leases.remove(key);
                }
                return NextHit::Leased;
            }
            leases.remove(key);
        }
        if leases.len() >= MAX_LEASES {
            leases.retain(|_, held| held.live(now, window));
        }
        NextHit::AskStore(if leases.len() < MAX_LEASES { lease } else { 1 })
    }

    fn keep_lease(&self, key: String, window_start: i64, left: u32) {
        let Ok(mut leases) = self.leases.lock() else {
            return;
        };
        let full = leases.len() >= MAX_LEASES;
        match leases.get_mut(&key) {
            // Two hits that both went to the store share what they got.
            Some(lease) if lease.window_start == window_start => lease.left += left,
            Some(lease) if lease.window_start < window_start => {
                *lease = Lease { window_start, left };
            }
            Some(_) => {}
            None if full => {}
            None => {
                leases.insert(key, Lease { window_start, left });
            }
        }
    }

    /// Take one attempt from `key`'s allowance before doing the work it
    /// guards, in one statement, so concurrent callers on any replica
    /// cannot all pass a check that only later counts them. `Ok(Err(_))`
    /// is how long until the window ends.
    pub async fn acquire(&self, key: &str) -> Result<Result<Ticket, Duration>, StoreError> {
        let key = self.key(key);
        let now = self.clock.now();
        let window = self.window_secs();
        Ok(
            match self
                .store
                .take_from_window(&key, i64::from(self.limit), window, now)
                .await?
            {
                Ok(taken) => Ok(Ticket {
                    key,
                    window_start: taken.window_start,
                }),
                Err(full) => {
                    let left = (full.window_start + window - now).clamp(1, window);
                    Err(Duration::from_secs(left.unsigned_abs()))
                }
            },
        )
    }

    /// Give an attempt back (it succeeded); a no-op once its window is over.
    /// A store failure here keeps the attempt counted (the safe side).
    pub async fn release(&self, ticket: Ticket) {
        if let Err(e) = self
            .store
            .give_back_to_window(&ticket.key, ticket.window_start)
            .await
        {
            tracing::warn!(limit = self.name, error = %e, "cannot give a sign-in attempt back");
        }
    }

    /// Forget `key`'s count, and this replica's lease of it (another
    /// replica's lease runs to its window's end).
    pub async fn clear(&self, key: &str) -> Result<(), StoreError> {
        let key = self.key(key);
        if let Ok(mut leases) = self.leases.lock() {
            leases.remove(&key);
        }
        self.store.clear_window(&key).await
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
/// bounds the CPU one client can hold at a time on this replica).
const MAX_IN_FLIGHT: u32 = 4;
/// How long an address that signed in to an account stays exempt from that
/// account's shared allowance.
const KNOWN_GOOD_FOR: Duration = Duration::from_secs(30 * 86_400);

/// The limits on password sign-ins, shared by every replica through the
/// store. Every attempt is counted *before* its password is checked; a
/// success gives its own attempt back.
///
/// - Per client address: `per_address` attempts per window, whatever the
///   account. This is what stops one client's guessing.
/// - Per account, over all addresses: `per_account` attempts per window,
///   which bounds guessing spread over many addresses. An address from
///   which the account signed in before (in the last 30 days, on any
///   replica) is exempt from it, so a flood from elsewhere cannot keep the
///   owner out from where they usually sign in.
/// - At most [`MAX_IN_FLIGHT`] checks at once per address and per account
///   on this replica.
pub struct LoginLimits {
    per_address: WindowLimiter,
    per_account: WindowLimiter,
    in_flight: InFlight,
    store: Store,
    clock: SharedClock,
}

/// Why a sign-in attempt is refused before its password is checked.
#[derive(Debug)]
pub enum LoginRefusal {
    /// The allowance is used up; it renews after this long.
    Exhausted(Duration),
    /// Too many checks for this address or account are running right now.
    Busy,
    /// The shared counters cannot be read: no attempt without a count.
    Store(StoreError),
}

impl From<StoreError> for LoginRefusal {
    fn from(e: StoreError) -> Self {
        LoginRefusal::Store(e)
    }
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
    pub fn new(per_address: u32, per_account: u32, window: Duration, store: Store) -> LoginLimits {
        LoginLimits {
            per_address: WindowLimiter::new("login-address", per_address, window, store.clone()),
            per_account: WindowLimiter::new("login-account", per_account, window, store.clone()),
            in_flight: InFlight {
                max: MAX_IN_FLIGHT,
                counts: Mutex::new(HashMap::new()),
            },
            store,
            clock: crate::clock::system(),
        }
    }

    /// Read the time from `clock` instead of the system.
    pub fn with_clock(mut self, clock: SharedClock) -> LoginLimits {
        self.per_address = self.per_address.with_clock(clock.clone());
        self.per_account = self.per_account.with_clock(clock.clone());
        self.clock = clock;
        self
    }

    /// Admit one attempt for `account` (a fixed-length digest of what was
    /// typed, so no input size reaches the store) from `address`, or refuse.
    pub async fn begin(
        &self,
        account: &str,
        address: &str,
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
                .acquire(address)
                .await?
                .map_err(LoginRefusal::Exhausted)?,
        )];
        let known = match self
            .store
            .is_known_login_address(account, address, self.clock.now())
            .await
        {
            Ok(known) => known,
            Err(e) => {
                release_all(tickets).await;
                return Err(e.into());
            }
        };
        if !known {
            let refused = match self.per_account.acquire(account).await {
                Ok(Ok(ticket)) => {
                    tickets.push((&self.per_account, ticket));
                    None
                }
                Ok(Err(wait)) => Some(LoginRefusal::Exhausted(wait)),
                Err(e) => Some(LoginRefusal::Store(e)),
            };
            if let Some(refused) = refused {
                release_all(tickets).await;
                return Err(refused);
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
}

async fn release_all(tickets: Vec<(&WindowLimiter, Ticket)>) {
    for (limiter, ticket) in tickets {
        limiter.release(ticket).await;
    }
}

impl LoginAttempt<'_> {
    /// The password was right: the attempt is given back and the address
    /// becomes known good for the account. Earlier failures stay counted,
    /// so signing in to one's own account never resets a guessing budget.
    pub async fn succeeded(self) {
        let LoginAttempt {
            limits,
            account,
            address,
            tickets,
            _guards,
        } = self;
        release_all(tickets).await;
        let until = limits.clock.now() + KNOWN_GOOD_FOR.as_secs() as i64;
        if let Err(e) = limits
            .store
            .remember_login_address(&account, &address, until)
            .await
        {
            tracing::warn!(error = %e, "cannot remember the address of a sign-in");
        }
    }

    /// The password was wrong: the attempt stays counted.
    pub fn failed(self) {}

    /// No password was checked after all: the attempt is given back.
    pub async fn abandoned(self) {
        release_all(self.tickets).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, ManualClock};

    async fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("limits.db").display());
        (dir, Store::connect(&url, 4).await.unwrap())
    }

    fn exhausted(r: Result<LoginAttempt<'_>, LoginRefusal>) -> bool {
        matches!(r, Err(LoginRefusal::Exhausted(_)))
    }

    #[tokio::test]
    async fn limits_per_key_and_per_limit() {
        let (_dir, store) = store().await;
        let l = WindowLimiter::new("t", 2, Duration::from_secs(60), store.clone());
        assert!(l.hit("a").await.unwrap());
        assert!(l.hit("a").await.unwrap());
        assert!(!l.hit("a").await.unwrap());
        assert!(l.hit("b").await.unwrap());
        // Another limit on the same store counts the same key apart.
        let other = WindowLimiter::new("u", 2, Duration::from_secs(60), store);
        assert!(other.hit("a").await.unwrap());
        l.clear("a").await.unwrap();
        assert!(l.hit("a").await.unwrap());
    }

    #[tokio::test]
    async fn a_window_ends_on_the_limiters_clock() {
        let (_dir, store) = store().await;
        let clock = ManualClock::new();
        let l =
            WindowLimiter::new("t", 1, Duration::from_secs(60), store).with_clock(clock.clone());
        assert!(l.hit("a").await.unwrap());
        assert!(!l.hit("a").await.unwrap());
        clock.advance(Duration::from_secs(59));
        assert!(!l.hit("a").await.unwrap());
        clock.advance(Duration::from_secs(1));
        assert!(l.hit("a").await.unwrap());
    }

    /// Hits on `l` for `key` until one is refused; how many passed.
    async fn hits_until_refused(l: &WindowLimiter, key: &str) -> u32 {
        let mut passed = 0;
        while l.hit(key).await.unwrap() {
            passed += 1;
            assert!(passed <= l.limit, "more than the limit passed");
        }
        passed
    }

    /// What the store counted for `key` of limiter `name` in the window
    /// starting at `now`'s (one more event, not admitted by anyone).
    async fn counted(store: &Store, name: &str, key: &str, now: i64) -> i64 {
        store
            .hit_window(&format!("{name}|{key}"), 1, 60, now)
            .await
            .unwrap()
            .count
            - 1
    }

    #[tokio::test]
    async fn a_large_limit_is_leased_from_the_store_and_admits_exactly_the_limit() {
        let (_dir, store) = store().await;
        let clock = ManualClock::new();
        let l = WindowLimiter::new("t", 100, Duration::from_secs(60), store.clone())
            .with_clock(clock.clone());
        // 100 / 32: leases of 3, the store written once per lease (each
        // probe of the count is one more event).
        assert!(l.hit("a").await.unwrap());
        assert_eq!(counted(&store, "t", "a", clock.now()).await, 3);
        assert!(l.hit("a").await.unwrap());
        assert!(l.hit("a").await.unwrap());
        assert_eq!(counted(&store, "t", "a", clock.now()).await, 4);
        // 3 hits and 2 probes so far: exactly 95 more pass.
        assert_eq!(hits_until_refused(&l, "a").await, 95);
        // A lease never outlives its window, and the next window is whole.
        clock.advance(Duration::from_secs(60));
        assert_eq!(hits_until_refused(&l, "a").await, 100);
        // Nor is it used in the last seconds of its window: a replica whose
        // clock is behind might otherwise spend it in the next one.
        clock.advance(Duration::from_secs(60));
        assert!(l.hit("c").await.unwrap());
        clock.advance(Duration::from_secs(58));
        assert!(l.hit("c").await.unwrap());
        assert_eq!(counted(&store, "t", "c", clock.now() - 58).await, 6);
        // Another key has its own budget; clear forgets the lease too.
        assert!(l.hit("b").await.unwrap());
        l.clear("b").await.unwrap();
        assert_eq!(hits_until_refused(&l, "b").await, 100);
    }

    #[tokio::test]
    async fn replicas_leasing_one_budget_never_admit_more_than_it() {
        let (_dir, store) = store().await;
        let clock = ManualClock::new();
        let replicas: Vec<WindowLimiter> = (0..3)
            .map(|_| {
                WindowLimiter::new("t", 320, Duration::from_secs(60), store.clone())
                    .with_clock(clock.clone())
            })
            .collect();
        let mut admitted = 0;
        let mut refused = [false; 3];
        let mut turn = 0;
        while refused.contains(&false) {
            let i = turn % 3;
            turn += 1;
            if refused[i] {
                continue;
            }
            if replicas[i].hit("k").await.unwrap() {
                admitted += 1;
            } else {
                refused[i] = true;
            }
        }
        // Leases of 10: at most what two other replicas hold unused is lost.
        assert!(admitted <= 320, "admitted {admitted}");
        assert!(admitted >= 320 - 2 * 9, "admitted {admitted}");
        // Once every replica refused, the store refuses anyone else too.
        let late =
            WindowLimiter::new("t", 320, Duration::from_secs(60), store).with_clock(clock.clone());
        assert!(!late.hit("k").await.unwrap());
    }

    #[tokio::test]
    async fn many_keys_do_not_grow_the_leases_past_their_cap() {
        let (_dir, store) = store().await;
        let l = WindowLimiter::new("t", 640, Duration::from_secs(60), store.clone());
        for i in 0..MAX_LEASES + 10 {
            assert!(l.hit(&format!("k{i}")).await.unwrap());
        }
        assert_eq!(l.leases.lock().unwrap().len(), MAX_LEASES);
        // Past the cap a key is counted one event at a time, as without leases.
        let now = l.clock.now();
        assert_eq!(
            counted(&store, "t", &format!("k{}", MAX_LEASES + 9), now).await,
            1
        );
        assert_eq!(counted(&store, "t", "k0", now).await, 20);
    }

    #[tokio::test]
    async fn acquire_counts_before_the_work_and_release_gives_back() {
        let (_dir, store) = store().await;
        let clock = ManualClock::new();
        let l =
            WindowLimiter::new("t", 2, Duration::from_secs(60), store).with_clock(clock.clone());
        let first = l.acquire("k").await.unwrap().unwrap();
        let _second = l.acquire("k").await.unwrap().unwrap();
        // Both still in progress: the third is refused, with the time left.
        clock.advance(Duration::from_secs(20));
        assert_eq!(
            l.acquire("k").await.unwrap().unwrap_err(),
            Duration::from_secs(40)
        );
        l.release(first).await;
        assert!(l.acquire("k").await.unwrap().is_ok());
        assert!(l.acquire("k").await.unwrap().is_err());
        // A new window starts afresh, and an old ticket cannot free a slot in it.
        let old = l.acquire("j").await.unwrap().unwrap();
        clock.advance(Duration::from_secs(61));
        let _ = l.acquire("j").await.unwrap().unwrap();
        let _ = l.acquire("j").await.unwrap().unwrap();
        l.release(old).await;
        assert!(l.acquire("j").await.unwrap().is_err());
    }

    #[tokio::test]
    async fn a_flood_on_an_account_leaves_the_owners_known_address_open() {
        let (_dir, store) = store().await;
        let limits = LoginLimits::new(3, 5, Duration::from_secs(300), store);
        limits
            .begin("admin", "home")
            .await
            .unwrap()
            .succeeded()
            .await;
        // Attackers from many addresses use up the account's allowance.
        for i in 0..5 {
            limits
                .begin("admin", &format!("attacker-{i}"))
                .await
                .unwrap()
                .failed();
        }
        assert!(exhausted(limits.begin("admin", "attacker-9").await));
        // The owner's usual address still gets its own allowance.
        limits
            .begin("admin", "home")
            .await
            .unwrap()
            .succeeded()
            .await;
        // A success does not reset an address's failures: signing in to
        // one's own account never buys more guesses against another.
        for _ in 0..3 {
            limits.begin("bob", "home").await.unwrap().failed();
        }
        assert!(exhausted(limits.begin("admin", "home").await));
    }

    #[tokio::test]
    async fn two_replicas_on_one_store_share_the_budget() {
        let (_dir, store) = store().await;
        let a = LoginLimits::new(3, 100, Duration::from_secs(300), store.clone());
        let b = LoginLimits::new(3, 100, Duration::from_secs(300), store);
        a.begin("x", "addr").await.unwrap().failed();
        b.begin("x", "addr").await.unwrap().failed();
        a.begin("x", "addr").await.unwrap().failed();
        assert!(exhausted(b.begin("x", "addr").await));
        assert!(exhausted(a.begin("x", "addr").await));
    }

    #[tokio::test]
    async fn an_unreachable_store_refuses_the_attempt() {
        let (_dir, store) = store().await;
        let limits = LoginLimits::new(3, 5, Duration::from_secs(300), store.clone());
        store.close().await;
        assert!(matches!(
            limits.begin("admin", "home").await,
            Err(LoginRefusal::Store(_))
        ));
    }

    #[tokio::test]
    async fn checks_in_flight_are_capped_per_address_and_account() {
        let (_dir, store) = store().await;
        let limits = LoginLimits::new(100, 100, Duration::from_secs(300), store);
        let mut held = Vec::new();
        for i in 0..MAX_IN_FLIGHT {
            held.push(limits.begin("carol", &format!("a{i}")).await.unwrap());
        }
        assert!(matches!(
            limits.begin("carol", "a9").await,
            Err(LoginRefusal::Busy)
        ));
        drop(held);
        assert!(limits.begin("carol", "a9").await.is_ok());
    }
}
