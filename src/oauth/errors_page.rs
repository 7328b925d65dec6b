//! `GET /errors`: the reason catalogue (`crate::funnel::reasons`) as one
//! page in the site's style, the target of every `error_uri`, served in
//! every mode. Rendered from [`Reason::ALL`], so it always matches the codes
//! on the wire; no script, the pages' security headers.

use std::sync::Arc;

use axum::{Router, extract::State, http::StatusCode, response::Response, routing::get};

use crate::branding::{Page, Site, escape};
use crate::funnel::reasons::{ERRORS_PATH, Reason};

pub fn routes(site: Arc<Site>) -> Router {
    Router::new()
        .route(ERRORS_PATH, get(errors_page))
        .with_state(site)
}

async fn errors_page(State(site): State<Arc<Site>>) -> Response {
    let mut sections = String::new();
    for r in Reason::ALL {
        sections.push_str(&format!(
            "<section id=\"{a}\"><h2><code>{c}</code></h2><p><strong>Cause:</strong> {cause}.</p><p><strong>Fix:</strong> {fix}.</p></section>",
            a = r.anchor(),
            c = escape(r.code()),
            cause = escape(r.cause()),
            fix = escape(r.fix()),
        ));
    }
    let body = format!(
        "<p>Each refusal names one of these reasons in its <code>error_description</code>; the link in <code>error_uri</code> leads to its section.</p>{sections}"
    );
    site.respond(
        StatusCode::OK,
        site.document(&Page {
            title: "Errors and reason codes",
            body,
            wide: true,
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::to_bytes;
    use tower::ServiceExt;

    #[tokio::test]
    async fn every_reason_has_a_section_and_the_page_runs_no_script() {
        let site = Arc::new(Site::plain(
            &url::Url::parse("https://mcp.example.com").unwrap(),
        ));
        let response = routes(site)
            .oneshot(
                axum::http::Request::get(ERRORS_PATH)
                    .body(axum::body::Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let csp = response.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(csp.starts_with("default-src 'none'"), "{csp}");
        let html = String::from_utf8(
            to_bytes(response.into_body(), usize::MAX)
                .await
                .unwrap()
                .to_vec(),
        )
        .unwrap();
        assert!(!html.contains("<script"));
        for r in Reason::ALL {
            assert!(html.contains(&format!("id=\"{}\"", r.anchor())), "{r}");
        }
    }
}
