//! The auth funnel as the console shows it: the attempts of a window
//! (`Store::funnel_attempts`) summed per client (the top ones by attempts,
//! the rest as "other") and per time bucket. Pure: the page renders it.

use std::collections::HashMap;

use crate::store::{FunnelAttempt, GRANT_ATTEMPT_PREFIX, USER_ATTEMPT_PREFIX};

/// Clients shown by name; the rest are summed as [`OTHER`].
pub const TOP_CLIENTS: usize = 8;
/// Stop reasons shown per client.
pub const TOP_REASONS: usize = 3;
/// The label of the clients beyond [`TOP_CLIENTS`].
pub const OTHER: &str = "other";
/// The most attempts one page reads (the store caps its rows too).
pub const MAX_ATTEMPTS: usize = 20_000;

/// The windows the page offers: `?since=` value, seconds, bucket seconds.
pub const WINDOWS: &[(&str, i64, i64)] = &[
    ("1h", 3600, 300),
    ("24h", 86_400, 3600),
    ("7d", 7 * 86_400, 86_400),
];
/// The window when `?since=` is absent or not one of [`WINDOWS`].
pub const DEFAULT_WINDOW: &str = "24h";

/// The window named by `since` (else the default): name, seconds, bucket.
pub fn window(since: Option<&str>) -> (&'static str, i64, i64) {
    let pick = |name: &str| WINDOWS.iter().copied().find(|w| w.0 == name);
    since
        .and_then(pick)
        .or_else(|| pick(DEFAULT_WINDOW))
        .unwrap_or(WINDOWS[1])
}

/// One client's row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientFunnel {
    pub client_id: String,
    pub attempts: u64,
    pub completed: u64,
    /// Stop reasons (stored code, e.g. `idp_error:access_denied`) with
    /// their counts, most frequent first, at most [`TOP_REASONS`].
    pub reasons: Vec<(String, u64)>,
}

impl ClientFunnel {
    /// Completed attempts in percent of attempts (0 when there are none).
    pub fn rate_percent(&self) -> u64 {
        (self.completed * 100)
            .checked_div(self.attempts)
            .unwrap_or(0)
    }
}

/// One time bucket of the chart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bucket {
    pub start: i64,
    pub attempts: u64,
    pub completed: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunnelSummary {
    pub clients: Vec<ClientFunnel>,
    pub buckets: Vec<Bucket>,
}

impl FunnelSummary {
    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }
}

/// Steps that, passed, mean the attempt obtained a token (or used one).
const COMPLETING_STEPS: &[&str] = &[
    "code_redeemed",
    "mcp_call",
    "client_credentials",
    "identity_assertion",
];

/// An attempt completed when it redeemed a code, obtained a token by a
/// machine grant, or made an MCP call, without a stop reason.
fn completed(attempt: &FunnelAttempt) -> bool {
    attempt
        .steps
        .iter()
        .any(|s| s.reason.is_none() && COMPLETING_STEPS.contains(&s.step.as_str()))
}

/// Sum `attempts` (of the window `[now - secs, now]`) per client and per
/// bucket of `bucket` seconds. Refreshes and MCP calls that joined no
/// attempt of the window are not authorization attempts: left out.
pub fn summarize(attempts: &[FunnelAttempt], now: i64, secs: i64, bucket: i64) -> FunnelSummary {
    let bucket = bucket.max(1);
    let count = (secs / bucket).max(1);
    // Buckets end at the current bucket's end, aligned to the bucket size.
    let last_start = now - now.rem_euclid(bucket);
    let first_start = last_start - (count - 1) * bucket;
    let mut buckets: Vec<Bucket> = (0..count)
        .map(|i| Bucket {
            start: first_start + i * bucket,
            attempts: 0,
            completed: 0,
        })
        .collect();
    let mut per_client: HashMap<&str, Tally<'_>> = HashMap::new();
    for a in attempts.iter().filter(|a| {
        !a.attempt.starts_with(GRANT_ATTEMPT_PREFIX) && !a.attempt.starts_with(USER_ATTEMPT_PREFIX)
    }) {
        let done = completed(a);
        let entry = per_client.entry(a.client_id.as_str()).or_default();
        entry.attempts += 1;
        if done {
            entry.completed += 1;
        }
        if let Some(r) = &a.stopped {
            *entry.reasons.entry(r.as_str()).or_default() += 1;
        }
        let i = (a.started_at - first_start).div_euclid(bucket);
        if let Some(b) = usize::try_from(i).ok().and_then(|i| buckets.get_mut(i)) {
            b.attempts += 1;
            if done {
                b.completed += 1;
            }
        }
    }
    let mut clients: Vec<(&str, Tally<'_>)> = per_client.into_iter().collect();
    // Most attempts first; ties by name so the page is stable.
    clients.sort_by(|a, b| b.1.attempts.cmp(&a.1.attempts).then(a.0.cmp(b.0)));
    let mut shown: Vec<ClientFunnel> = Vec::new();
    let mut rest: Option<Tally<'_>> = None;
    for (i, (client, tally)) in clients.into_iter().enumerate() {
        if i < TOP_CLIENTS {
            shown.push(tally.into_row(client));
        } else {
            let r = rest.get_or_insert_with(Tally::default);
            r.attempts += tally.attempts;
            r.completed += tally.completed;
            for (reason, c) in tally.reasons {
                *r.reasons.entry(reason).or_default() += c;
            }
        }
    }
    if let Some(rest) = rest {
        shown.push(rest.into_row(OTHER));
    }
    FunnelSummary {
        clients: shown,
        buckets,
    }
}

/// One client's (or "other"'s) counts while summing.
#[derive(Default)]
struct Tally<'a> {
    attempts: u64,
    completed: u64,
    reasons: HashMap<&'a str, u64>,
}

impl Tally<'_> {
    fn into_row(self, client_id: &str) -> ClientFunnel {
        ClientFunnel {
            client_id: client_id.to_owned(),
            attempts: self.attempts,
            completed: self.completed,
            reasons: top_reasons(self.reasons),
        }
    }
}

fn top_reasons(reasons: HashMap<&str, u64>) -> Vec<(String, u64)> {
    let mut list: Vec<(String, u64)> = reasons
        .into_iter()
        .map(|(r, c)| (r.to_owned(), c))
        .collect();
    list.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    list.truncate(TOP_REASONS);
    list
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::FunnelStep;

    fn attempt(key: &str, client: &str, at: i64, steps: &[(&str, Option<&str>)]) -> FunnelAttempt {
        FunnelAttempt {
            attempt: key.to_owned(),
            client_id: client.to_owned(),
            user_id: None,
            started_at: at,
            steps: steps
                .iter()
                .map(|(s, r)| FunnelStep {
                    at,
                    step: (*s).to_owned(),
                    reason: r.map(str::to_owned),
                })
                .collect(),
            stopped: steps.last().and_then(|(_, r)| r.map(str::to_owned)),
        }
    }

    #[test]
    fn counts_completion_reasons_and_buckets() {
        let now = 10 * 3600 + 120;
        let list = vec![
            attempt(
                "a",
                "c1",
                now - 60,
                &[("authorize", None), ("code_redeemed", None)],
            ),
            attempt(
                "b",
                "c1",
                now - 3700,
                &[("authorize", Some("pkce_missing"))],
            ),
            attempt(
                "c",
                "c1",
                now - 3700,
                &[("authorize", Some("pkce_missing"))],
            ),
            attempt(
                "d",
                "c1",
                now - 3700,
                &[("consent", Some("consent_denied"))],
            ),
            // A machine client's grant: one step, completed.
            attempt("m", "c3", now - 60, &[("client_credentials", None)]),
            // A refresh that joined nothing in the window: not an attempt.
            attempt("g:x", "c1", now, &[("refresh", Some("refresh_reused"))]),
            // Older than the window's first bucket: counted per client only.
            attempt(
                "e",
                "c2",
                now - 30 * 3600,
                &[("code_redeemed", Some("code_reused"))],
            ),
        ];
        let s = summarize(&list, now, 86_400, 3600);
        assert_eq!(s.buckets.len(), 24);
        assert_eq!(s.buckets[23].start, 10 * 3600);
        assert_eq!((s.buckets[23].attempts, s.buckets[23].completed), (2, 2));
        assert_eq!((s.buckets[22].attempts, s.buckets[22].completed), (3, 0));
        let c1 = &s.clients[0];
        assert_eq!(
            (c1.client_id.as_str(), c1.attempts, c1.completed),
            ("c1", 4, 1)
        );
        assert_eq!(c1.rate_percent(), 25);
        assert_eq!(
            c1.reasons,
            vec![
                ("pkce_missing".to_owned(), 2),
                ("consent_denied".to_owned(), 1)
            ]
        );
        assert_eq!(s.clients[1].client_id, "c2");
        assert_eq!(s.clients[1].completed, 0);
        assert_eq!(
            (s.clients[2].client_id.as_str(), s.clients[2].completed),
            ("c3", 1)
        );
    }

    #[test]
    fn clients_beyond_the_top_are_other_and_nothing_is_empty() {
        let list: Vec<FunnelAttempt> = (0..TOP_CLIENTS + 2)
            .map(|i| {
                attempt(
                    &format!("a{i}"),
                    &format!("c{i:02}"),
                    100,
                    &[("authorize", None)],
                )
            })
            .collect();
        let s = summarize(&list, 200, 3600, 300);
        assert_eq!(s.clients.len(), TOP_CLIENTS + 1);
        let other = s.clients.last().unwrap();
        assert_eq!((other.client_id.as_str(), other.attempts), (OTHER, 2));
        assert!(summarize(&[], 200, 3600, 300).is_empty());
        assert_eq!(window(Some("7d")).0, "7d");
        assert_eq!(window(Some("junk")).0, "24h");
        assert_eq!(window(None).1, 86_400);
    }
}
