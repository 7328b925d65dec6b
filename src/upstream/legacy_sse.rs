//! The 2024-11-05 HTTP+SSE client transport, for upstreams that do not speak
//! Streamable HTTP (rmcp 3.11 has no client for it): `GET` the SSE URL, wait
//! for the `endpoint` event, then `POST` each message to that endpoint while
//! the server's messages arrive as `message` events on the stream.

use futures::{StreamExt, channel::mpsc as futures_mpsc};
use rmcp::model::{ClientJsonRpcMessage, ServerJsonRpcMessage};
use sse_stream::SseStream;
use tokio_stream::wrappers::ReceiverStream;
use url::Url;

use super::outbound::HeaderSources;

/// How long the server has to name its message endpoint.
const ENDPOINT_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Why the legacy transport could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum LegacySseError {
    #[error("GET {url}: {source}")]
    Unreachable { url: Url, source: reqwest::Error },
    #[error("GET {url} answered {status}, not an event stream")]
    NotAnEventStream { url: Url, status: http::StatusCode },
    /// sse-stream's error has no `Debug`/`Error`; its text is kept.
    #[error("event stream broke: {0}")]
    StreamBroke(String),
    #[error("the endpoint event is not a URL")]
    EndpointNotAUrl,
    #[error("the event stream ended before naming an endpoint")]
    NoEndpoint,
    #[error("no endpoint event within {} s", ENDPOINT_WAIT.as_secs())]
    EndpointTimeout,
    #[error("the endpoint {0} is on another origin")]
    CrossOrigin(Url),
}

pub type LegacyTransport = (
    futures_mpsc::Sender<ClientJsonRpcMessage>,
    ReceiverStream<ServerJsonRpcMessage>,
);

fn with_headers(
    mut request: reqwest::RequestBuilder,
    auth: Option<String>,
    headers: std::collections::HashMap<http::HeaderName, http::HeaderValue>,
) -> reqwest::RequestBuilder {
    if let Some(token) = auth {
        request = request.bearer_auth(token);
    }
    for (name, value) in headers {
        request = request.header(name, value);
    }
    request
}

pub async fn connect(
    url: &Url,
    client: &reqwest::Client,
    sources: &HeaderSources,
) -> Result<LegacyTransport, LegacySseError> {
    let (auth, headers) = sources.current().await;
    let response = with_headers(client.get(url.clone()), auth, headers)
        .header(http::header::ACCEPT, "text/event-stream")
        .send()
        .await
        .map_err(|e| LegacySseError::Unreachable {
            url: url.clone(),
            source: e.without_url(),
        })?;
    let status = response.status();
    let is_sse = response
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    if !status.is_success() || !is_sse {
        return Err(LegacySseError::NotAnEventStream {
            url: url.clone(),
            status,
        });
    }
    let mut events = SseStream::from_bytes_stream(response.bytes_stream());
    let endpoint = tokio::time::timeout(ENDPOINT_WAIT, async {
        while let Some(event) = events.next().await {
            let event = event.map_err(|e| LegacySseError::StreamBroke(e.to_string()))?;
            if event.event.as_deref() == Some("endpoint") {
                let target = event.data.unwrap_or_default();
                return url
                    .join(target.trim())
                    .map_err(|_| LegacySseError::EndpointNotAUrl);
            }
        }
        Err(LegacySseError::NoEndpoint)
    })
    .await
    .map_err(|_| LegacySseError::EndpointTimeout)??;
    // The message endpoint must stay on the upstream's origin: a server must
    // not be able to send mcpgate's credentials for it elsewhere.
    if endpoint.origin() != url.origin() {
        return Err(LegacySseError::CrossOrigin(endpoint));
    }

    let (incoming_tx, incoming_rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        while let Some(event) = events.next().await {
            let Ok(event) = event else { break };
            if !matches!(event.event.as_deref(), None | Some("message")) {
                continue;
            }
            let Some(data) = event.data else { continue };
            match serde_json::from_str::<ServerJsonRpcMessage>(&data) {
                Ok(message) => {
                    if incoming_tx.send(message).await.is_err() {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "ignoring a message the upstream sent that is not JSON-RPC")
                }
            }
        }
    });

    let (outgoing_tx, mut outgoing_rx) = futures_mpsc::channel::<ClientJsonRpcMessage>(64);
    let client = client.clone();
    let sources = sources.clone();
    tokio::spawn(async move {
        while let Some(message) = outgoing_rx.next().await {
            let (auth, headers) = sources.current().await;
            let sent = with_headers(client.post(endpoint.clone()), auth, headers)
                .json(&message)
                .send()
                .await;
            match sent {
                Ok(r) if r.status().is_success() => {}
                Ok(r) => {
                    tracing::warn!(upstream = %sources.upstream, status = %r.status(), "the upstream refused a message")
                }
                Err(e) => {
                    tracing::warn!(upstream = %sources.upstream, error = %e.without_url(), "could not post to the upstream");
                }
            }
        }
    });
    Ok((outgoing_tx, ReceiverStream::new(incoming_rx)))
}
