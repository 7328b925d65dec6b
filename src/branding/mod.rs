//! The look of every browser page mcpgate serves (sign-in, consent, errors,
//! and the admin console): the `[branding]` settings, the page skeleton
//! ([`Site::document`]), the one stylesheet and the logo under `/assets/`,
//! the scope wording of the consent pages, and the security headers every
//! page goes out with ([`Site::respond`]). Pages carry no script and no
//! inline style, so the CSP is `style-src 'self'` and nothing else runs.

pub mod http;
pub mod settings;

use std::collections::BTreeMap;

use axum::{
    http::{HeaderValue, StatusCode, header},
    response::{Html, IntoResponse, Response},
};
use bytes::Bytes;

use crate::auth::policy::{AccessPolicy, ScopeRule};
use settings::{BrandingConfig, Logo, logo_media_type};

/// Why the pages cannot be set up (the logo file went away since validation).
#[derive(Debug, thiserror::Error)]
pub enum BrandingError {
    #[error("branding.logo_file: cannot read {path}: {source}")]
    LogoFile {
        path: String,
        source: std::io::Error,
    },
    #[error("branding.logo_file: {0} has no image type mcpgate serves")]
    LogoType(String),
}

/// A file served under `/assets/`, named by its content's hash so it can be
/// cached for a year and still change on the next release or config change.
#[derive(Debug, Clone)]
pub struct Asset {
    pub name: String,
    pub media_type: &'static str,
    pub bytes: Bytes,
}

/// The base stylesheet; [`Site::new`] appends the accent colour.
const BASE_CSS: &str = include_str!("mcpgate.css");

/// Words for scopes mcpgate knows: the built-in toolsets' and OpenID's.
const BUILT_IN_SCOPES: &[(&str, &str)] = &[
    (
        "docs:read",
        "Search and read the documents this server offers",
    ),
    ("notes:read", "Read your notes"),
    ("notes:write", "Create, change and delete your notes"),
    ("calc", "Use the calculator tools"),
    ("openid", "Know which account you signed in with"),
    ("profile", "See your name and profile details"),
    ("email", "See your email address"),
    (
        "offline_access",
        "Stay connected while you are away (it may renew its access without asking you again)",
    ),
];

/// A page: its title (also the `<h1>`) and its body, already HTML.
pub struct Page<'a> {
    pub title: &'a str,
    pub body: String,
    /// Tables and lists (the admin console) get the wide card.
    pub wide: bool,
}

/// Everything the pages need to look like the operator's: built once at
/// start and shared by every front (local, proxy, bridge) and the console.
#[derive(Debug)]
pub struct Site {
    product_name: String,
    server_name: String,
    support_url: Option<url::Url>,
    stylesheet: Asset,
    logo_file: Option<Asset>,
    /// The `src` of the logo: `/assets/...` or the configured https URL.
    logo_src: Option<String>,
    csp: HeaderValue,
    scope_words: BTreeMap<String, String>,
}

fn short_hash(bytes: &[u8]) -> String {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .take(6)
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Site {
    /// `public_url` names the server when `server_name` is not set;
    /// `policy` words the scopes the operator did not describe.
    pub fn new(
        branding: &BrandingConfig,
        public_url: &url::Url,
        policy: &AccessPolicy,
    ) -> Result<Site, BrandingError> {
        let accent = branding.accent_color;
        let css = format!(
            "{BASE_CSS}:root {{ --accent: {}; --accent-ink: {}; }}\n",
            accent.css(),
            accent.ink().css()
        );
        let stylesheet = Asset {
            name: format!("mcpgate-{}.css", short_hash(css.as_bytes())),
            media_type: "text/css; charset=utf-8",
            bytes: Bytes::from(css),
        };
        let (logo_file, logo_src, img_src) = match &branding.logo {
            None => (None, None, "'self'".to_owned()),
            Some(Logo::Url(url)) => (
                None,
                Some(url.to_string()),
                // Exactly the logo's origin, nothing else from outside.
                format!("'self' {}", url.origin().ascii_serialization()),
            ),
            Some(Logo::File(path)) => {
                let media_type = logo_media_type(path)
                    .ok_or_else(|| BrandingError::LogoType(path.display().to_string()))?;
                let bytes = std::fs::read(path).map_err(|source| BrandingError::LogoFile {
                    path: path.display().to_string(),
                    source,
                })?;
                let ext = path
                    .extension()
                    .and_then(|e| e.to_str())
                    .unwrap_or("img")
                    .to_ascii_lowercase();
                let asset = Asset {
                    name: format!("logo-{}.{ext}", short_hash(&bytes)),
                    media_type,
                    bytes: Bytes::from(bytes),
                };
                let src = format!("/assets/{}", asset.name);
                (Some(asset), Some(src), "'self'".to_owned())
            }
        };
        let csp = HeaderValue::from_str(&format!(
            "default-src 'none'; style-src 'self'; img-src {img_src}; frame-ancestors 'none'; base-uri 'none'"
        ))
        .unwrap_or_else(|_| {
            HeaderValue::from_static(
                "default-src 'none'; style-src 'self'; frame-ancestors 'none'; base-uri 'none'",
            )
        });
        let server_name = branding.server_name.clone().unwrap_or_else(|| {
            match (public_url.host_str(), public_url.port()) {
                (Some(host), Some(port)) => format!("{host}:{port}"),
                (Some(host), None) => host.to_owned(),
                _ => "this MCP server".to_owned(),
            }
        });
        let mut scope_words: BTreeMap<String, String> = BUILT_IN_SCOPES
            .iter()
            .map(|(s, w)| ((*s).to_owned(), (*w).to_owned()))
            .collect();
        for scope in policy.all_scopes() {
            if let std::collections::btree_map::Entry::Vacant(slot) =
                scope_words.entry(scope.clone())
            {
                slot.insert(policy_words(policy.rules_requiring(&scope)));
            }
        }
        scope_words.extend(branding.scopes.clone());
        Ok(Site {
            product_name: branding.product_name.clone(),
            server_name,
            support_url: branding.support_url.clone(),
            stylesheet,
            logo_file,
            logo_src,
            csp,
            scope_words,
        })
    }

    /// The defaults: no `[branding]`, the built-in policy (tests of pages).
    #[cfg(test)]
    pub(crate) fn plain(public_url: &url::Url) -> Site {
        Site::new(
            &BrandingConfig::default(),
            public_url,
            &AccessPolicy::new(Vec::new()),
        )
        .expect("no logo file, so nothing can fail")
    }

    pub fn product_name(&self) -> &str {
        &self.product_name
    }

    /// The MCP server's name as the consent page says it.
    pub fn server_name(&self) -> &str {
        &self.server_name
    }

    pub fn support_url(&self) -> Option<&url::Url> {
        self.support_url.as_ref()
    }

    /// `/assets/<name>` of the stylesheet.
    pub fn stylesheet_path(&self) -> String {
        format!("/assets/{}", self.stylesheet.name)
    }

    /// The asset called `name`, if it is one of ours.
    pub fn asset(&self, name: &str) -> Option<&Asset> {
        std::iter::once(&self.stylesheet)
            .chain(self.logo_file.iter())
            .find(|a| a.name == name)
    }

    /// What `scope` allows, in words: configured, built in, or derived from
    /// the policy rules that require it.
    pub fn scope_words(&self, scope: &str) -> String {
        self.scope_words
            .get(scope)
            .cloned()
            .unwrap_or_else(|| format!("Access named \u{201c}{scope}\u{201d}"))
    }

    /// The page skeleton: header with the product, the card, the footer.
    pub fn document(&self, page: &Page<'_>) -> String {
        let logo = self
            .logo_src
            .as_deref()
            // Decorative: the product name follows as text.
            .map(|src| {
                format!(
                    "<img class=\"brand-logo\" src=\"{}\" alt=\"\">",
                    escape(src)
                )
            })
            .unwrap_or_default();
        let support = self
            .support_url
            .as_ref()
            .map(|u| format!("<a href=\"{}\">Get help</a> · ", escape(u.as_str())))
            .unwrap_or_default();
        format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><meta name=\"color-scheme\" content=\"light dark\"><title>{title} · {product}</title><link rel=\"stylesheet\" href=\"{css}\"></head><body><header class=\"brand\">{logo}<span class=\"brand-name\">{product}</span></header><main id=\"main\"><div class=\"card{wide}\"><h1>{title}</h1>{body}</div></main><footer class=\"foot\">{support}Secured by mcpgate</footer></body></html>",
            title = escape(page.title),
            product = escape(&self.product_name),
            css = escape(&self.stylesheet_path()),
            wide = if page.wide { " wide" } else { "" },
            body = page.body,
        )
    }

    /// A page as an HTTP response: strict CSP (own stylesheet and images
    /// only, no script, no framing), no referrer, no sniffing, no caching.
    pub fn respond(&self, status: StatusCode, html: String) -> Response {
        let mut response = (status, Html(html)).into_response();
        let h = response.headers_mut();
        h.insert(header::CONTENT_SECURITY_POLICY, self.csp.clone());
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
}

/// "Use the tools a and b; read the resources r": what a policy scope opens.
fn policy_words<'a>(rules: impl Iterator<Item = &'a ScopeRule>) -> String {
    let (mut tools, mut resources, mut prompts) = (Vec::new(), Vec::new(), Vec::new());
    for rule in rules {
        tools.extend(rule.tools.iter().map(String::as_str));
        resources.extend(rule.resources.iter().map(String::as_str));
        prompts.extend(rule.prompts.iter().map(String::as_str));
    }
    let list = |items: &[&str]| -> String {
        let shown: Vec<&str> = items.iter().take(4).copied().collect();
        let more = items.len().saturating_sub(shown.len());
        let mut text = shown.join(", ");
        if more > 0 {
            text.push_str(&format!(" and {more} more"));
        }
        text
    };
    let mut parts = Vec::new();
    if !tools.is_empty() {
        parts.push(format!("use the tools {}", list(&tools)));
    }
    if !resources.is_empty() {
        parts.push(format!("read the resources {}", list(&resources)));
    }
    if !prompts.is_empty() {
        parts.push(format!("use the prompts {}", list(&prompts)));
    }
    if parts.is_empty() {
        return "Access this server grants under this name".to_owned();
    }
    let text = parts.join("; ");
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => text,
    }
}

/// HTML-escape text for an element or a quoted attribute.
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

#[cfg(test)]
mod tests {
    use super::*;
    use settings::{RawBranding, validate};

    fn site(raw: RawBranding, policy: Vec<ScopeRule>) -> Site {
        let mut errors = Vec::new();
        let branding = validate(&raw, &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        Site::new(
            &branding,
            &url::Url::parse("https://mcp.example.com").unwrap(),
            &AccessPolicy::new(policy),
        )
        .unwrap()
    }

    #[test]
    fn branding_is_escaped_into_the_skeleton() {
        let s = site(
            RawBranding {
                product_name: Some("Acme <b>\"AI\"</b>".to_owned()),
                support_url: Some("https://help.example.com/?a=1&b=\"x\"".to_owned()),
                ..RawBranding::default()
            },
            Vec::new(),
        );
        let html = s.document(&Page {
            title: "<script>",
            body: String::new(),
            wide: false,
        });
        assert!(
            !html.contains("<b>") && !html.contains("<script>"),
            "{html}"
        );
        assert!(
            html.contains("Acme &lt;b&gt;&quot;AI&quot;&lt;/b&gt;"),
            "{html}"
        );
        assert!(
            html.contains("href=\"https://help.example.com/?a=1&amp;b=%22x%22\""),
            "{html}"
        );
        assert!(!html.contains("style="), "no inline style: {html}");
        assert!(html.contains(&format!("href=\"{}\"", s.stylesheet_path())));
        assert_eq!(s.server_name(), "mcp.example.com");
    }

    #[test]
    fn the_accent_changes_the_stylesheet_name_and_only_appears_as_rrggbb() {
        let plain = site(RawBranding::default(), Vec::new());
        let red = site(
            RawBranding {
                accent_color: Some("#CC0000".to_owned()),
                ..RawBranding::default()
            },
            Vec::new(),
        );
        assert_ne!(plain.stylesheet_path(), red.stylesheet_path());
        let css = String::from_utf8(
            red.asset(&red.stylesheet_path()[8..])
                .unwrap()
                .bytes
                .to_vec(),
        )
        .unwrap();
        assert!(
            css.ends_with(":root { --accent: #cc0000; --accent-ink: #ffffff; }\n"),
            "{css}"
        );
        assert!(red.asset("mcpgate.css").is_none());
    }

    #[test]
    fn a_logo_url_opens_exactly_its_origin_for_images() {
        let s = site(
            RawBranding {
                logo_url: Some("https://cdn.example.com/acme/logo.svg".to_owned()),
                ..RawBranding::default()
            },
            Vec::new(),
        );
        let csp = s.respond(StatusCode::OK, String::new()).headers()
            [header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .to_owned();
        assert_eq!(
            csp,
            "default-src 'none'; style-src 'self'; img-src 'self' https://cdn.example.com; frame-ancestors 'none'; base-uri 'none'"
        );
        assert!(!csp.contains("unsafe-inline") && !csp.contains("script"));
    }

    #[test]
    fn a_logo_file_is_served_under_a_hashed_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logo.PNG");
        std::fs::write(&path, b"\x89PNG not really").unwrap();
        let s = site(
            RawBranding {
                logo_file: Some(path),
                ..RawBranding::default()
            },
            Vec::new(),
        );
        let html = s.document(&Page {
            title: "t",
            body: String::new(),
            wide: false,
        });
        let src = html.split("class=\"brand-logo\" src=\"").nth(1).unwrap();
        let name = src
            .split('"')
            .next()
            .unwrap()
            .trim_start_matches("/assets/");
        assert!(
            name.starts_with("logo-") && name.ends_with(".png"),
            "{name}"
        );
        assert_eq!(s.asset(name).unwrap().media_type, "image/png");
    }

    #[test]
    fn scopes_are_worded_configured_first_then_built_in_then_from_the_policy() {
        let rule = ScopeRule {
            tools: vec![
                "everything__get-env".to_owned(),
                "everything__echo".to_owned(),
            ],
            scopes: ["admin".to_owned()].into(),
            ..ScopeRule::default()
        };
        let s = site(
            RawBranding {
                scopes: [("notes:write".to_owned(), "Edit your notebook".to_owned())].into(),
                ..RawBranding::default()
            },
            vec![rule],
        );
        assert_eq!(s.scope_words("notes:write"), "Edit your notebook");
        assert_eq!(s.scope_words("notes:read"), "Read your notes");
        assert_eq!(
            s.scope_words("admin"),
            "Use the tools everything__get-env, everything__echo"
        );
        assert_eq!(s.scope_words("x:y"), "Access named \u{201c}x:y\u{201d}");
    }
}
