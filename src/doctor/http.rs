//! The doctor's HTTP client: a timeout on every request, redirects never
//! followed (a redirect is itself a finding), bodies read with a cap.

use std::time::Duration;

use super::DoctorError;

/// Larger answers are cut: metadata documents are a few KiB.
const BODY_CAP: usize = 256 * 1024;

pub fn client(timeout: Duration) -> Result<reqwest::Client, DoctorError> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("mcpgate-doctor/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| DoctorError::Client(e.to_string()))
}

/// reqwest's own message is terse ("error sending request"): add its causes
/// (connection refused, certificate errors, timeouts).
pub fn reason(e: &reqwest::Error) -> String {
    let mut reason = if e.is_timeout() {
        "timed out".to_owned()
    } else {
        String::new()
    };
    let mut cause: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(inner) = cause {
        if !reason.is_empty() {
            reason.push_str(": ");
        }
        reason.push_str(&inner.to_string());
        cause = inner.source();
    }
    if reason.is_empty() {
        reason = e.to_string();
    }
    reason
}

/// A response's status, headers and (capped) body.
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
}

impl Answer {
    pub async fn read(response: reqwest::Response) -> Answer {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let mut body = Vec::new();
        let mut response = response;
        while let Ok(Some(chunk)) = response.chunk().await {
            let room = BODY_CAP.saturating_sub(body.len());
            body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if body.len() >= BODY_CAP {
                break;
            }
        }
        Answer {
            status,
            headers,
            body,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// The JSON-RPC message with an `id` from a JSON or SSE body.
    pub fn rpc_message(&self) -> Option<serde_json::Value> {
        let is_sse = self
            .header("content-type")
            .is_some_and(|v| v.starts_with("text/event-stream"));
        if !is_sse {
            return self.json();
        }
        String::from_utf8_lossy(&self.body)
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .filter_map(|d| serde_json::from_str::<serde_json::Value>(d.trim()).ok())
            .find(|m| m.get("id").is_some())
    }

    /// The body as text for a cause (an HTML page's visible text), from the
    /// first line mentioning one of `markers` when there is one, cut short.
    pub fn excerpt_near(&self, markers: &[&str]) -> String {
        let raw = String::from_utf8_lossy(&self.body);
        let text = if raw.trim_start().starts_with('<') {
            visible_text(&raw)
        } else {
            raw.split_whitespace().collect::<Vec<_>>().join(" ")
        };
        let lower = text.to_ascii_lowercase();
        let start = markers
            .iter()
            .filter_map(|m| lower.find(m))
            .min()
            .map(|i| {
                lower[..i]
                    .rfind(". ")
                    .map_or(0, |j| j + 2)
                    .max(i.saturating_sub(80))
            })
            .unwrap_or(0);
        let start = (0..=start)
            .rev()
            .find(|i| text.is_char_boundary(*i))
            .unwrap_or(0);
        text[start..]
            .chars()
            .filter(|c| !c.is_control())
            .take(240)
            .collect::<String>()
            .trim()
            .to_owned()
    }

    /// The first characters of the body, for a cause text.
    pub fn excerpt(&self) -> String {
        self.excerpt_near(&[])
    }

    /// `error: error_description` of an OAuth error body, else the excerpt.
    pub fn oauth_error(&self) -> String {
        match self.json() {
            Some(v) if v.get("error").is_some() => {
                let error = v["error"].as_str().unwrap_or("?");
                match v.get("error_description").and_then(|d| d.as_str()) {
                    Some(d) => format!("{error}: {d}"),
                    None => error.to_owned(),
                }
            }
            _ => self.excerpt(),
        }
    }
}

/// An HTML page's words: without head, scripts and styles, tags removed,
/// whitespace collapsed (an IdP's error page names the error in its text).
fn visible_text(html: &str) -> String {
    let lower = html.to_ascii_lowercase();
    let mut out = String::new();
    let mut i = 0;
    while i < html.len() {
        let rest = &lower[i..];
        let skip_to = ["<head", "<script", "<style"]
            .iter()
            .zip(["</head>", "</script>", "</style>"])
            .find(|(open, _)| rest.starts_with(**open))
            .map(|(_, close)| rest.find(close).map_or(html.len(), |j| i + j + close.len()));
        if let Some(end) = skip_to {
            i = end;
        } else if rest.starts_with('<') {
            i = rest.find('>').map_or(html.len(), |j| i + j + 1);
            out.push(' ');
        } else {
            let next = rest.find('<').map_or(html.len(), |j| i + j);
            out.push_str(&html[i..next]);
            i = next;
        }
    }
    let words = out.split_whitespace().collect::<Vec<_>>().join(" ");
    words
        .replace("&#39;", "'")
        .replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_error_pages_become_their_words_near_the_marker() {
        let page = "<!DOCTYPE html><html><head><title>x</title><style>p{}</style></head><body>\n<h1>oops! something went wrong</h1><script>var a = '<b>';</script><p>error: invalid_redirect_uri</p><p>error_description: redirect_uri did not match</p></body></html>";
        let answer = Answer {
            status: 400,
            headers: reqwest::header::HeaderMap::new(),
            body: page.as_bytes().to_vec(),
        };
        assert_eq!(
            answer.excerpt(),
            "oops! something went wrong error: invalid_redirect_uri error_description: redirect_uri did not match"
        );
        assert!(answer.excerpt_near(&["redirect_uri"]).starts_with("oops"));
    }
}
