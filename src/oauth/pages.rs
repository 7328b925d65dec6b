//! The HTML pages of the authorization flow: sign-in, consent (local,
//! proxy and bridge mode), and errors. They are bodies for the shared
//! skeleton of [`crate::branding::Site`], which also sends them with the
//! browser security headers. Every interpolated value is escaped; the pages
//! carry no script and no inline style.
//!
//! The form contract (tests/e2e/local_browser.py relies on it): `/login`
//! posts `request`, `csrf`, `username`, `password`; `/consent` posts
//! `request`, `csrf`, `decision` = `approve` | `deny`, optional
//! `remember=1`; `/logout` posts `request`, `csrf`.

use super::flow::PendingRequest;
use crate::branding::{Page, Site, escape};

/// What an error page is about, which decides its title and what it tells
/// the person to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trouble {
    /// The app sent a request this server cannot accept (unknown client,
    /// redirect URI not registered, missing PKCE, ...).
    BadRequest,
    /// The request expired, was used, or belongs to another browser or form.
    CannotContinue,
    RateLimited,
    /// The identity provider did not answer, or answered nonsense.
    IdentityProviderDown,
    ServerError,
}

impl Trouble {
    fn title(self) -> &'static str {
        match self {
            Trouble::BadRequest => "This sign-in request is not valid",
            Trouble::CannotContinue => "This sign-in cannot continue",
            Trouble::RateLimited => "Too many attempts",
            Trouble::IdentityProviderDown => "The sign-in service is not answering",
            Trouble::ServerError => "Something went wrong",
        }
    }

    fn advice(self) -> &'static str {
        match self {
            Trouble::BadRequest => {
                "The app that sent you here asked for something this server does not allow. Try connecting again from the app; if this keeps happening, send this page to the app's developer or to your administrator."
            }
            Trouble::CannotContinue => "Close this window and start again from your app.",
            Trouble::RateLimited => "Wait a minute, then start again from your app.",
            Trouble::IdentityProviderDown => {
                "Nothing is wrong with your account. Try again in a few minutes; if it keeps happening, tell your administrator that the identity provider cannot be reached."
            }
            Trouble::ServerError => {
                "Try again from your app in a moment; if it keeps happening, tell your administrator."
            }
        }
    }
}

/// The sign-in form; `error` is shown under the password field.
pub struct LoginForm<'a> {
    pub request_id: &'a str,
    pub csrf: &'a str,
    pub client_name: &'a str,
    /// What was typed as the user name, kept after a failed attempt.
    pub username: Option<&'a str>,
    pub error: Option<&'a str>,
}

fn hidden(request_id: &str, csrf: &str) -> String {
    format!(
        "<input type=\"hidden\" name=\"request\" value=\"{}\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        escape(request_id),
        escape(csrf)
    )
}

pub fn login(site: &Site, form: &LoginForm<'_>) -> String {
    let (invalid, error) = match form.error {
        Some(e) => (
            " aria-invalid=\"true\" aria-describedby=\"signin-error\"",
            format!(
                "<p id=\"signin-error\" class=\"field-error\" role=\"alert\">{}</p>",
                escape(e)
            ),
        ),
        None => ("", String::new()),
    };
    // The cursor goes where typing is needed: the password after a failure.
    let (focus_user, focus_password) = if form.error.is_some() && form.username.is_some() {
        ("", " autofocus")
    } else {
        (" autofocus", "")
    };
    site.document(&Page {
        title: "Sign in",
        body: format!(
            "<p class=\"lead\">Sign in to <strong>{server}</strong> so that <strong>{client}</strong> can use it as you.</p><form method=\"post\" action=\"/login\">{hidden}<div class=\"field\"><label for=\"username\">User name</label><input id=\"username\" name=\"username\" type=\"text\" autocomplete=\"username\" autocapitalize=\"none\" spellcheck=\"false\" required value=\"{username}\"{invalid}{focus_user}></div><div class=\"field\"><label for=\"password\">Password</label><input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required{invalid}{focus_password}>{error}</div><button type=\"submit\" class=\"button block\">Sign in</button></form>",
            server = escape(site.server_name()),
            client = escape(form.client_name),
            hidden = hidden(form.request_id, form.csrf),
            username = escape(form.username.unwrap_or_default()),
        ),
        wide: false,
    })
}

/// The consent page of local and proxy mode.
pub struct ConsentView<'a> {
    pub request_id: &'a str,
    pub csrf: &'a str,
    pub request: &'a PendingRequest,
    /// Proxy mode: the identity provider the user signs in at next.
    pub sign_in_at: Option<&'a str>,
    /// Local mode: the signed-in account's user name ("not you? sign out").
    pub account: Option<&'a str>,
}

/// Where the browser goes back to: a host, or `scheme:` for an app's own
/// scheme (`cursor:`).
fn redirect_host(redirect_uri: &str) -> String {
    url::Url::parse(redirect_uri)
        .ok()
        .map(|u| match u.host_str() {
            Some(h) => h.to_owned(),
            None => format!("{}:", u.scheme()),
        })
        .unwrap_or_default()
}

fn scope_list(site: &Site, scopes: &[String], none: &str) -> String {
    if scopes.is_empty() {
        return format!(
            "<ul class=\"scopes\"><li><span class=\"scope-words\">{}</span></li></ul>",
            escape(none)
        );
    }
    let items: String = scopes
        .iter()
        .map(|s| {
            format!(
                "<li><span class=\"scope-words\">{}</span><code>{}</code></li>",
                escape(&site.scope_words(s)),
                escape(s)
            )
        })
        .collect();
    format!("<ul class=\"scopes\">{items}</ul>")
}

fn fact(label: &str, value_html: &str) -> String {
    format!("<div><dt>{label}</dt><dd>{value_html}</dd></div>")
}

/// Proxy and bridge mode: where the user signs in after approving.
fn sign_in_next(idp: &str) -> String {
    format!(
        "<p>If you allow it, you sign in with <strong>{}</strong> next.</p>",
        escape(idp)
    )
}

const LOOPBACK_WARNING: &str = "<p class=\"notice\">This app only returns to programs on this computer (localhost). Allow it only if you started it yourself just now.</p>";

pub fn consent(site: &Site, view: &ConsentView<'_>) -> String {
    let request = view.request;
    let account = view
        .account
        .map(|name| {
            format!(
                "<div class=\"account\"><span>Signed in as <strong>{}</strong></span><form method=\"post\" action=\"/logout\">{}<button type=\"submit\" class=\"linkish\">Not you? Sign out</button></form></div>",
                escape(name),
                hidden(view.request_id, view.csrf)
            )
        })
        .unwrap_or_default();
    let mut facts = String::new();
    if let Some(host) = &request.document_host {
        facts.push_str(&fact(
            "Described at",
            &format!(
                "<strong>{}</strong> <span class=\"muted small\">(the app publishes its details there)</span>",
                escape(host)
            ),
        ));
    }
    facts.push_str(&fact(
        "Returns to",
        &format!(
            "<strong>{}</strong> <code>{}</code>",
            escape(&redirect_host(&request.redirect_uri)),
            escape(&request.redirect_uri)
        ),
    ));
    let loopback = if request.loopback_only {
        LOOPBACK_WARNING
    } else {
        ""
    };
    let next = view.sign_in_at.map(sign_in_next).unwrap_or_default();
    site.document(&Page {
        title: "Allow access?",
        body: format!(
            "{account}<p class=\"lead\"><strong>{client}</strong> wants to use <strong>{server}</strong> as you.</p>{next}<dl class=\"facts\">{facts}</dl><h2>It will be able to</h2>{scopes}{loopback}<form method=\"post\" action=\"/consent\">{hidden}<div class=\"check\"><input type=\"checkbox\" id=\"remember\" name=\"remember\" value=\"1\"><label for=\"remember\">Remember this decision for this app</label></div><div class=\"actions\"><button type=\"submit\" name=\"decision\" value=\"approve\" class=\"button\">Allow</button><button type=\"submit\" name=\"decision\" value=\"deny\" class=\"button secondary\">Deny</button></div></form>",
            client = escape(&request.client_name),
            server = escape(site.server_name()),
            scopes = scope_list(
                site,
                &request.scope,
                "Use this server's tools as you (it asked for no particular permission)"
            ),
            hidden = hidden(view.request_id, view.csrf),
        ),
        wide: false,
    })
}

/// An error page: what happened (`message`) and what to do about it.
pub fn error(site: &Site, trouble: Trouble, message: &str) -> String {
    error_page(site, trouble, message, None)
}

/// [`error`] with the reason's fix (one sentence) and a link to its
/// section of `/errors`.
pub fn refusal(site: &Site, trouble: Trouble, message: &str, fix: &str, more_at: &str) -> String {
    error_page(site, trouble, message, Some((fix, more_at)))
}

fn error_page(site: &Site, trouble: Trouble, message: &str, fix: Option<(&str, &str)>) -> String {
    let fix = fix
        .map(|(fix, more_at)| {
            let mut fix = fix.to_owned();
            if let Some(first) = fix.get(..1) {
                fix.replace_range(..1, &first.to_uppercase());
            }
            format!(
                "<p>{}.</p><p><a href=\"{}\">More about this error</a></p>",
                escape(&fix),
                escape(more_at)
            )
        })
        .unwrap_or_default();
    let support = site
        .support_url()
        .map(|u| {
            format!(
                "<p><a href=\"{}\">Contact support</a> if you need help.</p>",
                escape(u.as_str())
            )
        })
        .unwrap_or_default();
    site.document(&Page {
        title: trouble.title(),
        body: format!(
            "<div class=\"notice error\" role=\"alert\"><p>{}</p></div>{fix}<p>{}</p>{support}",
            escape(message),
            trouble.advice(),
        ),
        wide: false,
    })
}

/// Bridge mode's consent page, shown before the browser goes to the
/// identity provider (which may answer without asking, e.g. when the user
/// consented to another client before). No "remember" and no account:
/// mcpgate does not know who the user is at this point.
pub struct BridgeConsent<'a> {
    pub request_id: &'a str,
    pub csrf: &'a str,
    pub client_name: &'a str,
    pub redirect_uri: &'a str,
    pub scopes: &'a [String],
    pub idp_host: &'a str,
}

pub fn bridge_consent(site: &Site, c: &BridgeConsent<'_>) -> String {
    let facts = fact(
        "Returns to",
        &format!(
            "<strong>{}</strong> <code>{}</code>",
            escape(&redirect_host(c.redirect_uri)),
            escape(c.redirect_uri)
        ),
    );
    site.document(&Page {
        title: "Allow access?",
        body: format!(
            "<p class=\"lead\"><strong>{client}</strong> wants to use <strong>{server}</strong> as you.</p>{next}<dl class=\"facts\">{facts}</dl><h2>It will be able to</h2>{scopes}<p class=\"notice\">Allow only if you started this yourself just now from that app.</p><form method=\"post\" action=\"/consent\">{hidden}<div class=\"actions\"><button type=\"submit\" name=\"decision\" value=\"approve\" class=\"button\">Allow</button><button type=\"submit\" name=\"decision\" value=\"deny\" class=\"button secondary\">Deny</button></div></form>",
            client = escape(c.client_name),
            server = escape(site.server_name()),
            scopes = scope_list(site, c.scopes, "The identity provider's default access"),
            next = sign_in_next(c.idp_host),
            hidden = hidden(c.request_id, c.csrf),
        ),
        wide: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site() -> Site {
        Site::plain(&url::Url::parse("https://mcp.example.com").unwrap())
    }

    fn request(client_name: &str, scope: &[&str]) -> PendingRequest {
        PendingRequest {
            client_id: "c".to_owned(),
            client_name: client_name.to_owned(),
            redirect_uri: "http://127.0.0.1:5555/cb?x=<y>".to_owned(),
            state: None,
            code_challenge: "x".to_owned(),
            scope: scope.iter().map(|s| s.to_string()).collect(),
            resource: "https://mcp.example.com/mcp".to_owned(),
            document_host: Some("<evil>.example".to_owned()),
            loopback_only: true,
            redirect_uri_sent: true,
        }
    }

    #[test]
    fn markup_is_escaped() {
        let html = error(&site(), Trouble::BadRequest, "<script>alert(1)</script>");
        assert!(!html.contains("<script>"));
        assert!(html.contains("&lt;script&gt;"));
    }

    #[test]
    fn consent_escapes_everything_the_client_chose_and_words_scopes() {
        let r = request(
            "<img src=x onerror=alert(1)>",
            &["notes:read", "<b>odd</b>"],
        );
        let html = consent(
            &site(),
            &ConsentView {
                request_id: "r\"1",
                csrf: "c'1",
                request: &r,
                sign_in_at: None,
                account: Some("<alice>"),
            },
        );
        for raw in [
            "<img src=x",
            "<b>odd",
            "<evil>",
            "<alice>",
            "x=<y>",
            "r\"1",
            "c'1",
        ] {
            assert!(!html.contains(raw), "{raw} unescaped in {html}");
        }
        assert!(html.contains("Read your notes"), "{html}");
        assert!(html.contains("Access named \u{201c}&lt;b&gt;odd&lt;/b&gt;\u{201d}"));
        assert!(html.contains("localhost"), "the loopback warning");
        assert!(html.contains("&lt;evil&gt;.example"), "the document host");
        assert!(
            html.contains("<strong>mcp.example.com</strong>"),
            "server name"
        );
        // "Not you? sign out" is a POST form with the request's CSRF token.
        assert!(html.contains(
            "<form method=\"post\" action=\"/logout\"><input type=\"hidden\" name=\"request\" value=\"r&quot;1\"><input type=\"hidden\" name=\"csrf\" value=\"c&#39;1\">"
        ));
        assert!(!html.contains("<script") && !html.contains("style="));
    }

    #[test]
    fn every_input_has_a_label_and_the_error_sits_by_the_field() {
        let html = login(
            &site(),
            &LoginForm {
                request_id: "r",
                csrf: "c",
                client_name: "App",
                username: Some("bob\"><x"),
                error: Some("Wrong user name or password."),
            },
        );
        for id in ["username", "password"] {
            assert!(html.contains(&format!("<label for=\"{id}\">")), "{id}");
            assert!(html.contains(&format!("id=\"{id}\"")), "{id}");
        }
        assert!(html.contains("value=\"bob&quot;&gt;&lt;x\""));
        assert!(html.contains("aria-describedby=\"signin-error\""));
        let password = html.find("id=\"password\"").unwrap();
        let error = html.find("id=\"signin-error\"").unwrap();
        assert!(error > password, "the error follows the password field");
        let consent_html = consent(
            &site(),
            &ConsentView {
                request_id: "r",
                csrf: "c",
                request: &request("App", &[]),
                sign_in_at: Some("Okta"),
                account: None,
            },
        );
        assert!(consent_html.contains("<label for=\"remember\">"));
        assert!(!consent_html.contains("/logout"), "no account, no sign-out");
        assert!(consent_html.contains("asked for no particular permission"));
    }

    #[test]
    fn error_pages_say_what_to_do() {
        let html = error(
            &site(),
            Trouble::IdentityProviderDown,
            "the identity provider is unreachable",
        );
        assert!(html.contains("The sign-in service is not answering"));
        assert!(html.contains("Try again in a few minutes"));
        assert!(html.contains("the identity provider is unreachable"));
    }
}
