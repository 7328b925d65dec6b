//! The HTML pages of the authorization flow: login, consent, error. Every
//! interpolated value is escaped; the pages carry no script. Every page goes
//! out through [`page_response`], which adds the browser security headers.

use axum::{
    http::{HeaderValue, StatusCode, header},
    response::{Html, IntoResponse, Response},
};

use super::flow::PendingRequest;

/// A page as an HTTP response: no framing, no script, no referrer, no
/// sniffing, no caching. Shared by every mode that answers a browser.
pub fn page_response(status: StatusCode, body: String) -> Response {
    let mut response = (status, Html(body)).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\"><title>{t}</title><style>body{{font-family:system-ui,sans-serif;max-width:28rem;margin:3rem auto;padding:0 1rem}}label,input,button{{display:block;width:100%;margin:.4rem 0}}.warn{{color:#8a4b00}}.err{{color:#b00020}}button{{padding:.5rem}}</style></head><body><h1>{t}</h1>{body}</body></html>",
        t = escape(title)
    )
}

pub fn login(request_id: &str, csrf: &str, client_name: &str, error: Option<&str>) -> String {
    let error = error
        .map(|e| format!("<p class=\"err\">{}</p>", escape(e)))
        .unwrap_or_default();
    page(
        "Sign in",
        &format!(
            "<p>Sign in to continue to <strong>{client}</strong>.</p>{error}<form method=\"post\" action=\"/login\"><input type=\"hidden\" name=\"request\" value=\"{r}\"><input type=\"hidden\" name=\"csrf\" value=\"{c}\"><label>User name<input name=\"username\" autocomplete=\"username\" required></label><label>Password<input name=\"password\" type=\"password\" autocomplete=\"current-password\" required></label><button type=\"submit\">Sign in</button></form>",
            client = escape(client_name),
            r = escape(request_id),
            c = escape(csrf),
        ),
    )
}

/// `sign_in_at`: proxy mode, where the user signs in after approving.
pub fn consent(
    request_id: &str,
    csrf: &str,
    request: &PendingRequest,
    sign_in_at: Option<&str>,
) -> String {
    let redirect_host = url::Url::parse(&request.redirect_uri)
        .ok()
        .map(|u| match u.host_str() {
            Some(h) => h.to_owned(),
            None => format!("{}:", u.scheme()),
        })
        .unwrap_or_default();
    let scopes: String = request
        .scope
        .iter()
        .map(|s| format!("<li><code>{}</code></li>", escape(s)))
        .collect();
    let document = request
        .document_host
        .as_deref()
        .map(|h| {
            format!(
                "<p>Client described by a document hosted at <strong>{}</strong>.</p>",
                escape(h)
            )
        })
        .unwrap_or_default();
    let loopback = if request.loopback_only {
        "<p class=\"warn\">This client only returns to programs on this computer (localhost). Approve only if you started it yourself just now.</p>"
    } else {
        ""
    };
    let next = sign_in_at
        .map(|idp| {
            format!(
                "<p>If you allow it, you sign in with <strong>{}</strong> next.</p>",
                escape(idp)
            )
        })
        .unwrap_or_default();
    page(
        "Allow access?",
        &format!(
            "<p><strong>{client}</strong> wants to use this MCP server as you.</p>{document}{next}<p>After you decide, you go back to <strong>{host}</strong> (<code>{uri}</code>).</p><p>It asks for:</p><ul>{scopes}</ul>{loopback}<form method=\"post\" action=\"/consent\"><input type=\"hidden\" name=\"request\" value=\"{r}\"><input type=\"hidden\" name=\"csrf\" value=\"{c}\"><label><input type=\"checkbox\" name=\"remember\" value=\"1\" style=\"display:inline;width:auto\"> Remember this decision for this client</label><button type=\"submit\" name=\"decision\" value=\"approve\">Allow</button><button type=\"submit\" name=\"decision\" value=\"deny\">Deny</button></form>",
            client = escape(&request.client_name),
            host = escape(&redirect_host),
            uri = escape(&request.redirect_uri),
            r = escape(request_id),
            c = escape(csrf),
        ),
    )
}

pub fn error(message: &str) -> String {
    page(
        "Cannot continue",
        &format!(
            "<p class=\"err\">{}</p><p>Close this window and start again from your app.</p>",
            escape(message)
        ),
    )
}

/// [`error`] with the reason's fix and a link to its section of `/errors`.
pub fn error_with_fix(message: &str, fix: &str, more_at: &str) -> String {
    let mut fix = fix.to_owned();
    if let Some(first) = fix.get(..1) {
        fix.replace_range(..1, &first.to_uppercase());
    }
    page(
        "Cannot continue",
        &format!(
            "<p class=\"err\">{}</p><p>{}.</p><p><a href=\"{}\">More about this error</a></p><p>Close this window and start again from your app.</p>",
            escape(message),
            escape(&fix),
            escape(more_at)
        ),
    )
}

/// Bridge mode's consent page, shown before the browser goes to the
/// identity provider (which may answer without asking, e.g. when the user
/// consented to another client before). No "remember": mcpgate does not know
/// who the user is at this point.
pub struct BridgeConsent<'a> {
    pub request_id: &'a str,
    pub csrf: &'a str,
    pub client_name: &'a str,
    pub redirect_uri: &'a str,
    pub scopes: &'a [String],
    pub idp_host: &'a str,
}

pub fn bridge_consent(c: &BridgeConsent<'_>) -> String {
    let redirect_host = url::Url::parse(c.redirect_uri)
        .ok()
        .map(|u| match u.host_str() {
            Some(h) => h.to_owned(),
            None => format!("{}:", u.scheme()),
        })
        .unwrap_or_default();
    let scopes: String = if c.scopes.is_empty() {
        "<li>the identity provider's default access</li>".to_owned()
    } else {
        c.scopes
            .iter()
            .map(|s| format!("<li><code>{}</code></li>", escape(s)))
            .collect()
    };
    page(
        "Allow access?",
        &format!(
            "<p><strong>{client}</strong> wants to use this MCP server as you.</p><p>If you allow it, you sign in with <strong>{idp}</strong> next.</p><p>After that, you go back to <strong>{host}</strong> (<code>{uri}</code>).</p><p>It asks for:</p><ul>{scopes}</ul><p class=\"warn\">Allow only if you started this yourself just now from that app.</p><form method=\"post\" action=\"/consent\"><input type=\"hidden\" name=\"request\" value=\"{r}\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\"><button type=\"submit\" name=\"decision\" value=\"approve\">Allow</button><button type=\"submit\" name=\"decision\" value=\"deny\">Deny</button></form>",
            client = escape(c.client_name),
            idp = escape(c.idp_host),
            host = escape(&redirect_host),
            uri = escape(c.redirect_uri),
            r = escape(c.request_id),
            csrf = escape(c.csrf),
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_is_escaped() {
        let html = error("<script>alert(1)</script>");
        assert!(!html.contains("<script>"));
        assert!(html.contains("&lt;script&gt;"));
    }
}
