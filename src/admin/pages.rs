//! The admin console's pages: server-rendered HTML on the branding skeleton,
//! forms only (no script). Every value from a user, a client or the store
//! is escaped where it is interpolated; every form carries the CSRF token.

use super::clients::{ClientKind, ClientOverview};
use super::funnel::{Bucket, FunnelSummary, WINDOWS};
use crate::branding::{Page, Site, escape};
use crate::funnel::Reason;
use crate::store::{GrantRecord, SigningKeyRecord, UserRecord};
use crate::upstream::UpstreamHealth;

/// The console's sections, in the navigation's order: a new section is one
/// more entry here and one more page in `http.rs`.
pub const SECTIONS: &[(&str, &str)] = &[
    ("/admin", "Users"),
    ("/admin/clients", "Clients"),
    ("/admin/sessions", "MCP sessions"),
    ("/admin/keys", "Signing keys"),
    ("/admin/upstreams", "Upstreams"),
    ("/admin/funnel", "Auth funnel"),
];

/// What every console page shows around its content.
pub struct Frame<'a> {
    pub site: &'a Site,
    pub admin: &'a str,
    pub csrf: &'a str,
    /// The path of the section shown (marked in the navigation).
    pub current: &'a str,
    /// The outcome of the last action, already worded (never from input).
    pub done: Option<&'a str>,
}

impl Frame<'_> {
    fn page(&self, title: &str, content: &str) -> String {
        let nav: String = SECTIONS
            .iter()
            .map(|(href, label)| {
                let current = if *href == self.current {
                    " aria-current=\"page\""
                } else {
                    ""
                };
                format!("<li><a href=\"{href}\"{current}>{label}</a></li>")
            })
            .collect();
        let done = self
            .done
            .map(|d| format!("<p class=\"notice\" role=\"status\">{}</p>", escape(d)))
            .unwrap_or_default();
        let body = format!(
            "<div class=\"account\"><span>Signed in as <strong>{admin}</strong> (admin)</span><form method=\"post\" action=\"/admin/logout\">{csrf}<button class=\"linkish\" type=\"submit\">Sign out</button></form></div><nav aria-label=\"Admin sections\"><ul class=\"admin-nav\">{nav}</ul></nav>{done}{content}",
            admin = escape(self.admin),
            csrf = self.csrf_field(),
        );
        self.site.document(&Page {
            title,
            body,
            wide: true,
        })
    }

    fn csrf_field(&self) -> String {
        format!(
            "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
            escape(self.csrf)
        )
    }

    /// A one-button form posting `action` with hidden `fields`.
    fn button(
        &self,
        action: &str,
        fields: &[(&str, &str)],
        label: &str,
        secondary: bool,
    ) -> String {
        let hidden: String = fields
            .iter()
            .map(|(k, v)| {
                format!(
                    "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
                    escape(k),
                    escape(v)
                )
            })
            .collect();
        format!(
            "<form class=\"inline\" method=\"post\" action=\"/admin/act\">{csrf}<input type=\"hidden\" name=\"action\" value=\"{action}\">{hidden}<button class=\"button{class}\" type=\"submit\">{label}</button></form>",
            csrf = self.csrf_field(),
            action = escape(action),
            class = if secondary { " secondary" } else { "" },
            label = escape(label),
        )
    }
}

/// Seconds since the epoch as `YYYY-MM-DD HH:MM UTC`.
pub fn when(epoch: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp(epoch) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02} UTC",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute()
        ),
        Err(_) => epoch.to_string(),
    }
}

fn table(caption: &str, head: &[&str], rows: &[String], empty: &str) -> String {
    if rows.is_empty() {
        return format!("<p class=\"muted\">{}</p>", escape(empty));
    }
    let head: String = head
        .iter()
        .map(|h| match *h {
            // The buttons' column: named for screen readers, blank on screen.
            "" => "<th scope=\"col\"><span class=\"skip\">Actions</span></th>".to_owned(),
            h => format!("<th scope=\"col\">{}</th>", escape(h)),
        })
        .collect();
    format!(
        "<div class=\"table-scroll\"><table><caption class=\"skip\">{}</caption><thead><tr>{head}</tr></thead><tbody>{}</tbody></table></div>",
        escape(caption),
        rows.concat()
    )
}

pub fn users(frame: &Frame<'_>, users: &[UserRecord]) -> String {
    let rows: Vec<String> = users
        .iter()
        .map(|u| {
            let kind = if u.password_hash == crate::store::NO_PASSWORD {
                "identity provider"
            } else {
                "local"
            };
            let mut status = Vec::new();
            if u.is_admin {
                status.push("admin".to_owned());
            }
            if let Some(t) = u.disabled_at {
                status.push(format!("disabled {}", when(t)));
            }
            format!(
                "<tr><td><a href=\"/admin/user?id={id}\">{name}</a></td><td>{kind}</td><td>{status}</td><td>{created}</td></tr>",
                id = escape(&url_component(&u.id)),
                name = escape(&u.username),
                status = escape(&status.join(", ")),
                created = when(u.created_at),
            )
        })
        .collect();
    let add = format!(
        "<h2>Add a user</h2><form method=\"post\" action=\"/admin/act\">{csrf}<input type=\"hidden\" name=\"action\" value=\"user.add\"><div class=\"field\"><label for=\"username\">User name</label><input id=\"username\" name=\"username\" type=\"text\" autocomplete=\"off\" required></div><div class=\"field\"><label for=\"password\">Password (8 characters or more)</label><input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"new-password\" required></div><div class=\"check\"><input id=\"is_admin\" name=\"is_admin\" type=\"checkbox\" value=\"1\"><label for=\"is_admin\">May use this console (admin)</label></div><button class=\"button\" type=\"submit\">Add user</button></form>",
        csrf = frame.csrf_field()
    );
    let list = table(
        "Users",
        &["User", "Kind", "Status", "Created"],
        &rows,
        "No users.",
    );
    frame.page("Users", &format!("{list}{add}"))
}

/// A user's page: their state, actions, remembered consents and live grants.
pub fn user(
    frame: &Frame<'_>,
    user: &UserRecord,
    consents: &[(String, String, i64)],
    grants: &[GrantRecord],
    connections: Option<&[crate::upstream::user_auth::Connection]>,
) -> String {
    let name = user.username.as_str();
    let local = user.password_hash != crate::store::NO_PASSWORD;
    let facts = format!(
        "<dl class=\"facts\"><div><dt>Id</dt><dd><code>{}</code></dd></div><div><dt>Kind</dt><dd>{}</dd></div><div><dt>Admin</dt><dd>{}</dd></div><div><dt>Status</dt><dd>{}</dd></div><div><dt>Created</dt><dd>{}</dd></div></dl>",
        escape(&user.id),
        if local { "local" } else { "identity provider" },
        if user.is_admin { "yes" } else { "no" },
        match user.disabled_at {
            Some(t) => format!("disabled since {}", when(t)),
            None => "active".to_owned(),
        },
        when(user.created_at),
    );
    let target = [("user", user.id.as_str())];
    let mut actions = vec![if user.disabled_at.is_some() {
        frame.button("user.enable", &target, "Enable", true)
    } else {
        frame.button(
            "user.disable",
            &target,
            "Disable (ends sessions, revokes tokens)",
            true,
        )
    }];
    actions.push(if user.is_admin {
        frame.button("user.revoke_admin", &target, "Take admin role", true)
    } else {
        frame.button("user.grant_admin", &target, "Make admin", true)
    });
    actions.push(frame.button("user.remove", &target, "Remove user", true));
    let reset = if local {
        format!(
            "<h2>Reset password</h2><form method=\"post\" action=\"/admin/act\">{csrf}<input type=\"hidden\" name=\"action\" value=\"user.reset_password\"><input type=\"hidden\" name=\"user\" value=\"{id}\"><div class=\"field\"><label for=\"new-password\">New password for {name}</label><input id=\"new-password\" name=\"password\" type=\"password\" autocomplete=\"new-password\" required></div><button class=\"button secondary\" type=\"submit\">Set password (ends their sessions, consents and tokens)</button></form>",
            csrf = frame.csrf_field(),
            id = escape(&user.id),
            name = escape(name),
        )
    } else {
        String::new()
    };
    let consent_rows: Vec<String> = consents
        .iter()
        .map(|(client_id, scope, at)| {
            format!(
                "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(client_id),
                escape(scope),
                when(*at),
                frame.button(
                    "consent.revoke",
                    &[("user", &user.id), ("client_id", client_id)],
                    "Revoke",
                    true
                )
            )
        })
        .collect();
    let grant_rows: Vec<String> = grants
        .iter()
        .map(|g| {
            format!(
                "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&g.client_id),
                escape(&g.scope),
                when(g.last_refreshed_at),
                when(g.expires_at),
                frame.button(
                    "grant.revoke",
                    &[("user", &user.id), ("family", &g.family_id)],
                    "Revoke",
                    true
                )
            )
        })
        .collect();
    // Only with `user_auth` upstreams configured.
    let connections = connections
        .map(|list| {
            let rows: Vec<String> = list
                .iter()
                .map(|c| {
                    format!(
                        "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                        escape(&c.upstream),
                        escape(c.scope.as_deref().unwrap_or("")),
                        when(c.connected_at),
                        when(c.refreshed_at),
                        c.expires_at.map(when).unwrap_or_else(|| "never".to_owned()),
                        frame.button(
                            "connection.revoke",
                            &[("user", &user.id), ("upstream", &c.upstream)],
                            "Revoke",
                            true
                        )
                    )
                })
                .collect();
            format!(
                "<h2>Upstream connections</h2><p class=\"small muted\">Accounts this user connected at OAuth-protected upstreams (<code>user_auth</code>). Revoking deletes the tokens here and revokes them at the upstream's authorization server when it can; the user's next call there asks them to connect again.</p>{}",
                table(
                    "Upstream connections",
                    &["Upstream", "Scopes", "Connected", "Refreshed", "Access token expires", ""],
                    &rows,
                    "No upstream connections."
                )
            )
        })
        .unwrap_or_default();
    let content = format!(
        "<p><a href=\"/admin\">All users</a></p>{facts}<div class=\"actions\">{actions}</div>{reset}<h2>Remembered consents</h2>{consents}<h2>Live grants</h2><p class=\"small muted\">Each is a sign-in to a client with a live refresh token. Revoking ends the refresh token; access tokens already issued stay valid until they expire.</p>{grants}{connections}",
        actions = actions.concat(),
        consents = table(
            "Remembered consents",
            &["Client", "Scopes", "Given", ""],
            &consent_rows,
            "No remembered consents."
        ),
        grants = table(
            "Live grants",
            &["Client", "Scopes", "Last refreshed", "Expires", ""],
            &grant_rows,
            "No live grants."
        ),
    );
    frame.page(&format!("User {name}"), &content)
}

/// Every client, of each kind, with what removing it means.
pub fn clients(frame: &Frame<'_>, clients: &[ClientOverview]) -> String {
    let rows: Vec<String> = clients
        .iter()
        .map(|c| {
            let redirects: String = c
                .redirect_uris
                .iter()
                .map(|u| format!("<li><code>{}</code></li>", escape(u)))
                .collect();
            let target = [("client_id", c.client_id.as_str())];
            let remove = match c.kind {
                ClientKind::Registered { .. } => {
                    frame.button("client.remove", &target, "Remove", true)
                }
                ClientKind::Configured => format!(
                    "{}<p class=\"small muted\">Removed in the configuration ([[auth.local.clients]]).</p>",
                    frame.button("client.revoke_grants", &target, "Revoke grants", true)
                ),
                ClientKind::Document => {
                    frame.button("client.revoke_grants", &target, "Revoke grants", true)
                }
            };
            format!(
                "<tr><td>{name}</td><td><code>{id}</code></td><td>{kind}</td><td><ul class=\"plain\">{redirects}</ul></td><td>{created}</td><td>{used}</td><td>{grants}</td><td>{remove}</td></tr>",
                name = escape(c.name.as_deref().unwrap_or("-")),
                id = escape(&c.client_id),
                kind = c.kind.label(),
                created = c.registered_at.map(when).unwrap_or_else(|| "-".to_owned()),
                used = c.last_used.map(when).unwrap_or_else(|| "never".to_owned()),
                grants = c.live_grants,
            )
        })
        .collect();
    let content = format!(
        "<p class=\"small muted\">Registered clients registered themselves here; configured ones are in [[auth.local.clients]]; metadata-document (CIMD) clients are named by their document's URL and listed once they signed someone in. Revoking a client's grants forgets its remembered consents and revokes its refresh tokens; a CIMD client may ask again.</p>{}",
        table(
            "Clients",
            &[
                "Name",
                "Client id",
                "Kind",
                "Redirect URIs",
                "Registered",
                "Last used",
                "Live grants",
                ""
            ],
            &rows,
            "No clients yet."
        )
    );
    frame.page("Clients", &content)
}

pub fn sessions(
    frame: &Frame<'_>,
    sessions: &[(String, String, Option<String>, i64, i64)],
) -> String {
    let rows: Vec<String> = sessions
        .iter()
        .map(|(id, transport, owner, created, expires)| {
            // The session id is a bearer handle of its client: a digest names it.
            let handle = super::session_handle(id);
            format!(
                "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&handle),
                escape(transport),
                escape(owner.as_deref().unwrap_or("-")),
                when(*created),
                when(*expires),
                frame.button("session.end", &[("session", &handle)], "End", true),
            )
        })
        .collect();
    let content = format!(
        "<p class=\"small muted\">Ending a session is its client's DELETE: every replica refuses it from then on (404), and the client starts a new one.</p>{}",
        table(
            "MCP sessions",
            &["Session", "Transport", "Owner", "Started", "Expires", ""],
            &rows,
            "No live MCP sessions.",
        )
    );
    frame.page("MCP sessions", &content)
}

pub fn keys(frame: &Frame<'_>, keys: &[SigningKeyRecord], now: i64) -> String {
    let rows: Vec<String> = keys
        .iter()
        .map(|k| {
            let state = match k.retire_at {
                Some(r) if r <= now => "retired",
                _ if k.activate_at > now => "published, not signing yet",
                Some(_) => "retiring",
                None => "signing",
            };
            format!(
                "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&k.kid),
                escape(&k.alg),
                state,
                when(k.activate_at),
                k.retire_at.map(when).unwrap_or_else(|| "-".to_owned()),
            )
        })
        .collect();
    let content = format!(
        "{}<h2>Rotate</h2><p>Adds a key that signs after a minute of publication; the others retire once the tokens they signed have expired.</p>{}",
        table(
            "Signing keys",
            &["Key id", "Algorithm", "State", "Activates", "Retires"],
            &rows,
            "No signing keys."
        ),
        frame.button("key.rotate", &[], "Rotate signing key", false)
    );
    frame.page("Signing keys", &content)
}

/// One upstream with this replica's call counts.
pub struct UpstreamRow {
    pub health: UpstreamHealth,
    pub calls: u64,
    pub errors: u64,
}

pub fn upstreams(frame: &Frame<'_>, upstreams: Option<&[UpstreamRow]>) -> String {
    let content = match upstreams {
        None => {
            "<p class=\"muted\">No upstream MCP servers are configured ([[gateway.upstreams]]).</p>"
                .to_owned()
        }
        Some(list) => {
            let rows: Vec<String> = list
                .iter()
                .map(|u| {
                    format!(
                        "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                        escape(&u.health.name),
                        u.health.transport,
                        escape(&u.health.state.to_string()),
                        u.health.restarts,
                        u.calls,
                        u.errors,
                    )
                })
                .collect();
            format!(
                "<p class=\"small muted\">Counted by this replica since it started (each replica keeps its own).</p>{}",
                table(
                    "Upstreams",
                    &[
                        "Upstream",
                        "Transport",
                        "State",
                        "Restarts",
                        "Tool calls",
                        "Failed calls"
                    ],
                    &rows,
                    "No upstreams."
                )
            )
        }
    };
    frame.page("Upstreams", &content)
}

/// The auth funnel of a window: per client attempts, completed, rate and
/// top stop reasons (each linking to its `/errors` section), and one bar
/// chart of attempts and completed per bucket, with its numbers in a table.
pub fn funnel(frame: &Frame<'_>, summary: &FunnelSummary, window: &str, bucket: i64) -> String {
    let choices: String = WINDOWS
        .iter()
        .map(|(name, _, _)| {
            if *name == window {
                format!("<li><strong aria-current=\"true\">last {name}</strong></li>")
            } else {
                format!("<li><a href=\"/admin/funnel?since={name}\">last {name}</a></li>")
            }
        })
        .collect();
    let choices =
        format!("<nav aria-label=\"Window\"><ul class=\"admin-nav\">{choices}</ul></nav>");
    if summary.is_empty() {
        let content = format!(
            "{choices}<p class=\"muted\">No authorization attempts in the last {}.</p>",
            escape(window)
        );
        return frame.page("Auth funnel", &content);
    }
    let rows: Vec<String> = summary
        .clients
        .iter()
        .map(|c| {
            let reasons: Vec<String> = c
                .reasons
                .iter()
                .map(|(code, n)| format!("<li>{} ({n})</li>", reason_link(code)))
                .collect();
            format!(
                "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}%</td><td><ul class=\"plain\">{}</ul></td></tr>",
                escape(&c.client_id),
                c.attempts,
                c.completed,
                c.rate_percent(),
                reasons.concat(),
            )
        })
        .collect();
    let clients = table(
        "Attempts per client",
        &[
            "Client",
            "Attempts",
            "Completed",
            "Completion",
            "Top stop reasons",
        ],
        &rows,
        "",
    );
    let bucket_rows: Vec<String> = summary
        .buckets
        .iter()
        .map(|b| {
            format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                when(b.start),
                b.attempts,
                b.completed
            )
        })
        .collect();
    let numbers = format!(
        "<details><summary>The chart's numbers</summary>{}</details>",
        table(
            "Attempts and completed per period",
            &["Period starting", "Attempts", "Completed"],
            &bucket_rows,
            ""
        )
    );
    let content = format!(
        "{choices}<p class=\"small muted\">An attempt is one authorization (the steps sharing its PKCE challenge); it completed when it redeemed its code or made an MCP call. Clients beyond the {top} with the most attempts are summed as “other”. Every replica's attempts are counted.</p>{clients}<h2>Attempts and completed per {per}</h2>{chart}{numbers}",
        top = super::funnel::TOP_CLIENTS,
        per = period_name(bucket),
        chart = bar_chart(&summary.buckets, window),
    );
    frame.page("Auth funnel", &content)
}

fn period_name(bucket: i64) -> String {
    match bucket {
        3600 => "hour".to_owned(),
        86_400 => "day".to_owned(),
        s if s % 60 == 0 => format!("{} minutes", s / 60),
        s => format!("{s} seconds"),
    }
}

/// A stored stop reason linked to its section on `/errors`; an IdP's own
/// code (`idp_error:<code>`) links to `idp_error`'s section.
fn reason_link(code: &str) -> String {
    let base = code.split(':').next().unwrap_or(code);
    match Reason::from_code(base) {
        Some(r) => format!(
            "<a href=\"{}#{}\"><code>{}</code></a>",
            crate::funnel::reasons::ERRORS_PATH,
            r.anchor(),
            escape(code)
        ),
        None => format!("<code>{}</code>", escape(code)),
    }
}

/// Grouped bars (attempts, completed) per bucket as inline SVG: coloured by
/// the stylesheet's classes (the CSP allows no inline style), described by
/// its `<title>`/`<desc>`; the numbers are also in a table.
fn bar_chart(buckets: &[Bucket], window: &str) -> String {
    const HEIGHT: i64 = 160;
    const TOP: i64 = 10;
    const BOTTOM: i64 = 24;
    const LEFT: i64 = 36;
    const SLOT: i64 = 28;
    let max = buckets.iter().map(|b| b.attempts).max().unwrap_or(0).max(1);
    let max = i64::try_from(max).unwrap_or(i64::MAX);
    let plot = HEIGHT - TOP - BOTTOM;
    let count = i64::try_from(buckets.len()).unwrap_or(0);
    let width = LEFT + count * SLOT + 8;
    let bar = |value: u64, x: i64, class: &str| -> String {
        let v = i64::try_from(value).unwrap_or(i64::MAX);
        let h = v.saturating_mul(plot) / max;
        format!(
            "<rect class=\"{class}\" x=\"{x}\" y=\"{}\" width=\"11\" height=\"{h}\"><title>{value}</title></rect>",
            TOP + plot - h
        )
    };
    let mut bars = String::new();
    for (i, b) in buckets.iter().enumerate() {
        let x = LEFT + i64::try_from(i).unwrap_or(0) * SLOT + 2;
        bars.push_str(&bar(b.attempts, x, "bar-attempts"));
        bars.push_str(&bar(b.completed, x + 12, "bar-completed"));
    }
    // Label the first, middle and last buckets (times in UTC).
    let mut labels = String::new();
    let n = buckets.len();
    for i in [0, n / 2, n.saturating_sub(1)] {
        if let Some(b) = buckets.get(i) {
            let x = LEFT + i64::try_from(i).unwrap_or(0) * SLOT + 2;
            let text = when(b.start);
            let short = text.get(5..16).unwrap_or(&text);
            // The last label ends at its bars, so it is not cut off at the
            // chart's right edge.
            let (x, anchor) = if i + 1 == n && n > 1 {
                (x + 23, " text-anchor=\"end\"")
            } else {
                (x, "")
            };
            labels.push_str(&format!(
                "<text class=\"chart-label\" x=\"{x}\" y=\"{}\"{anchor}>{}</text>",
                HEIGHT - 6,
                escape(short)
            ));
        }
    }
    let total: u64 = buckets.iter().map(|b| b.attempts).sum();
    let done: u64 = buckets.iter().map(|b| b.completed).sum();
    format!(
        "<div class=\"chart-scroll\"><svg class=\"chart\" role=\"img\" aria-labelledby=\"funnel-chart-title funnel-chart-desc\" viewBox=\"0 0 {width} {HEIGHT}\" width=\"{width}\" height=\"{HEIGHT}\" xmlns=\"http://www.w3.org/2000/svg\"><title id=\"funnel-chart-title\">Attempts and completed, last {w}</title><desc id=\"funnel-chart-desc\">{total} attempts, {done} completed; the most in one period: {max}. The table below has every period.</desc><line class=\"chart-axis\" x1=\"{LEFT}\" y1=\"{base}\" x2=\"{width}\" y2=\"{base}\"/><text class=\"chart-label\" x=\"0\" y=\"{ty}\">{max}</text><text class=\"chart-label\" x=\"0\" y=\"{base}\">0</text>{bars}{labels}</svg></div><p class=\"small chart-legend\"><span class=\"key key-attempts\"></span> attempts <span class=\"key key-completed\"></span> completed (times in UTC)</p>",
        w = escape(window),
        base = TOP + plot,
        ty = TOP + 8,
    )
}

/// The console's own sign-in form (local mode).
pub fn sign_in(site: &Site, csrf: &str, error: Option<&str>) -> String {
    let error = error
        .map(|e| format!("<p class=\"notice error\" role=\"alert\">{}</p>", escape(e)))
        .unwrap_or_default();
    site.document(&Page {
        title: "Sign in to the admin console",
        body: format!(
            "{error}<form method=\"post\" action=\"/admin/login\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\"><div class=\"field\"><label for=\"username\">User name</label><input id=\"username\" name=\"username\" type=\"text\" autocomplete=\"username\" required></div><div class=\"field\"><label for=\"password\">Password</label><input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required></div><button class=\"button block\" type=\"submit\">Sign in</button></form>",
            csrf = escape(csrf),
        ),
        wide: false,
    })
}

/// The console's sign-in in proxy mode: one button that goes to the
/// identity provider (a form, so no GET starts a sign-in).
pub fn sign_in_upstream(site: &Site, csrf: &str, provider: &str) -> String {
    site.document(&Page {
        title: "Sign in to the admin console",
        body: format!(
            "<p class=\"lead\">The console signs you in at {provider}. The admin role comes from its groups ([admin] in the configuration) or from an operator (mcpgate users set-admin).</p><form method=\"post\" action=\"/admin/login\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\"><button class=\"button block\" type=\"submit\">Sign in with {provider}</button></form>",
            csrf = escape(csrf),
            provider = escape(provider),
        ),
        wide: false,
    })
}

/// A refusal or failure: what happened and where to go.
pub fn problem(site: &Site, title: &str, message: &str, back: Option<&str>) -> String {
    let back = back
        .map(|href| format!("<p><a href=\"{}\">Back</a></p>", escape(href)))
        .unwrap_or_default();
    site.document(&Page {
        title,
        body: format!("<p class=\"lead\">{}</p>{back}", escape(message)),
        wide: false,
    })
}

fn url_component(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(site: &Site) -> Frame<'_> {
        Frame {
            site,
            admin: "<root>",
            csrf: "t\"k",
            current: "/admin/keys",
            done: None,
        }
    }

    #[test]
    fn pages_carry_the_token_mark_the_section_and_have_no_inline_style() {
        let site = Site::plain(&url::Url::parse("https://mcp.example.com").unwrap());
        let html = keys(&frame(&site), &[], 0);
        assert!(html.contains("name=\"csrf\" value=\"t&quot;k\""), "{html}");
        assert!(
            html.contains("<a href=\"/admin/keys\" aria-current=\"page\">"),
            "{html}"
        );
        assert!(
            html.contains("Signed in as <strong>&lt;root&gt;</strong>"),
            "{html}"
        );
        assert!(
            !html.contains("style=") && !html.contains("<script"),
            "{html}"
        );
        // Every action is a POST to /admin/act.
        assert!(!html.contains("method=\"get\""), "{html}");
    }

    #[test]
    fn the_funnel_chart_draws_the_numbers_to_scale_and_links_reasons() {
        let buckets = [
            Bucket {
                start: 0,
                attempts: 4,
                completed: 1,
            },
            Bucket {
                start: 3600,
                attempts: 0,
                completed: 0,
            },
        ];
        let svg = bar_chart(&buckets, "24h");
        // The plot is 126 units high: the largest bucket fills it.
        assert!(
            svg.contains("class=\"bar-attempts\" x=\"38\" y=\"10\" width=\"11\" height=\"126\""),
            "{svg}"
        );
        assert!(
            svg.contains("class=\"bar-completed\" x=\"50\" y=\"105\" width=\"11\" height=\"31\""),
            "{svg}"
        );
        assert!(svg.contains("height=\"0\""), "{svg}");
        assert!(
            svg.contains("role=\"img\"") && svg.contains("4 attempts, 1 completed"),
            "{svg}"
        );
        assert!(!svg.contains("style="), "{svg}");
        assert_eq!(
            reason_link("idp_error:access_denied"),
            "<a href=\"/errors#idp-error\"><code>idp_error:access_denied</code></a>"
        );
        assert_eq!(reason_link("<x>"), "<code>&lt;x&gt;</code>");
    }

    #[test]
    fn times_are_shown_in_utc() {
        assert_eq!(when(0), "1970-01-01 00:00 UTC");
        assert_eq!(when(1_700_000_000), "2023-11-14 22:13 UTC");
    }
}
