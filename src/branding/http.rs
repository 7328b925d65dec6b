//! `/assets/{name}`: the stylesheet and the logo file. Names carry a hash
//! of the content, so they are cached for a year (`immutable`); anything
//! else under `/assets/` is 404.

use std::sync::Arc;

use axum::{
    Router,
    extract::{Path, State},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};

use super::Site;

pub fn routes(site: Arc<Site>) -> Router {
    Router::new()
        .route("/assets/{name}", get(asset))
        .with_state(site)
}

async fn asset(State(site): State<Arc<Site>>, Path(name): Path<String>) -> Response {
    let Some(asset) = site.asset(&name) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let mut response = asset.bytes.clone().into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.media_type),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // An SVG logo opened on its own is a document: it may run nothing.
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; sandbox"),
    );
    response
}
