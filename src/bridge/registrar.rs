//! Bridge-mode registration (RFC 7591): the client's metadata is checked and
//! capped here, its redirect URIs stay with mcpgate, and the IdP registers
//! only the client's own callback. Auth0 applications are created through
//! the Management API within a daily budget shared by all replicas, and the
//! ones that never obtain a token are deleted by the sweep.

use secrecy::ExposeSecret;
use serde_json::{Value, json};

use super::{Bridge, BridgeError, Registration, Relayed};
use crate::{
    funnel::{FunnelEvent, Step},
    oauth::{
        clients::{AuthMethod, ClientMetadata},
        crypto::random_token,
    },
    store::BridgeClientRecord,
};

/// RFC 7591 fields relayed to an IdP's own registration endpoint, with
/// their caps: (name, longest string, most list items). Anything else is
/// dropped: the IdP stores what it is given.
const FIELDS: &[(&str, usize, usize)] = &[
    ("client_name", 200, 0),
    ("token_endpoint_auth_method", 50, 0),
    ("grant_types", 50, 5),
    ("response_types", 50, 3),
    ("client_uri", 2000, 0),
    ("logo_uri", 2000, 0),
    ("tos_uri", 2000, 0),
    ("policy_uri", 2000, 0),
    ("scope", 1000, 0),
    ("contacts", 320, 5),
    ("software_id", 200, 0),
    ("software_version", 100, 0),
    ("application_type", 20, 0),
    ("redirect_uris", 2000, 10),
];

/// How many unused applications one sweep deletes at most (Management API
/// rate limits are low).
const SWEEP_BATCH: i64 = 50;

impl Bridge {
    /// RFC 7591 registration. The client's redirect URIs pass mcpgate's
    /// policy and are kept here; the IdP registers only the client's own
    /// callback, `public_url/callback/<key>`.
    pub async fn register(
        &self,
        body: Value,
        client_address: &str,
    ) -> Result<Relayed, BridgeError> {
        let result = self.register_at_idp(body, client_address).await;
        // Only a client the IdP registered gets a row; refusals are counted.
        let event = match &result {
            Ok(answer) => match (answer.status, answer.body["client_id"].as_str()) {
                (200 | 201, Some(id)) => FunnelEvent::new(Step::Registered, id),
                _ => FunnelEvent::new(Step::Registered, "-")
                    .unknown_client()
                    .stopped(super::funnel_steps::idp_refusal(answer)),
            },
            Err(e) => FunnelEvent::new(Step::Registered, "-")
                .unknown_client()
                .stopped(e.reason()),
        };
        self.funnel.record(event);
        result
    }

    async fn register_at_idp(
        &self,
        body: Value,
        client_address: &str,
    ) -> Result<Relayed, BridgeError> {
        if !self.registrations.hit(client_address).await? {
            return Err(BridgeError::RateLimited);
        }
        check_limits(&body)?;
        let metadata: ClientMetadata = serde_json::from_value(body.clone()).map_err(|_| {
            BridgeError::InvalidClientMetadata("the body is not valid client metadata".to_owned())
        })?;
        let metadata = metadata.normalise_for_registration()?;
        let own_redirects = metadata.redirect_uris.clone();
        let client_name = metadata.client_name.clone();
        let key = random_token(16)?;
        let callback = self.callback_url(&key);
        let (mut answer, managed) = match &self.registration {
            Registration::Passthrough { endpoint } => {
                let mut relayed = serde_json::Map::new();
                if let Some(obj) = body.as_object() {
                    for (name, _, _) in FIELDS {
                        if let Some(v) = obj.get(*name) {
                            relayed.insert((*name).to_owned(), v.clone());
                        }
                    }
                }
                relayed.insert("redirect_uris".into(), json!([callback]));
                (
                    self.relay(self.http.post(endpoint).json(&relayed)).await?,
                    0,
                )
            }
            Registration::Auth0 { management } => {
                let day = self.clock.now().div_euclid(86_400);
                let reserved = self
                    .store
                    .reserve_bridge_application(day, i64::from(self.applications_per_day))
                    .await?;
                if !reserved {
                    tracing::warn!(
                        limit = self.applications_per_day,
                        "bridge: the daily budget of Auth0 applications is used up; registrations refused until tomorrow (UTC)"
                    );
                    return Err(BridgeError::BudgetExhausted {
                        retry_after_secs: (day + 1) * 86_400 - self.clock.now(),
                    });
                }
                let token = management.token().await?;
                (
                    self.create_auth0_client(token.expose_secret(), metadata, &callback)
                        .await?,
                    1,
                )
            }
        };
        if let (200 | 201, Some(new_id)) = (answer.status, answer.body["client_id"].as_str()) {
            let text = serde_json::to_string(&own_redirects)
                .map_err(|e| BridgeError::Internal(e.to_string()))?;
            self.store
                .save_bridge_client(&BridgeClientRecord {
                    client_id: new_id.to_owned(),
                    redirect_uris: text,
                    created_at: self.clock.now(),
                    callback_key: Some(key),
                    client_name,
                    managed,
                    last_used_at: None,
                })
                .await?;
            answer.body["redirect_uris"] = json!(own_redirects);
        }
        Ok(answer)
    }

    /// Housekeeping, run by the server's background sweeper: expired
    /// requests and codes go, and Auth0 applications mcpgate created that
    /// obtained no token for `unused_application_days` are deleted at Auth0.
    pub async fn sweep(&self) {
        let now = self.clock.now();
        if let Err(e) = self.store.sweep_bridge(now).await {
            tracing::warn!(error = %e, "bridge: sweep failed");
        }
        let Registration::Auth0 { management } = &self.registration else {
            return;
        };
        if self.unused_application_days == 0 {
            return;
        }
        let cutoff = now - i64::from(self.unused_application_days) * 86_400;
        let unused = match self.store.unused_bridge_clients(cutoff, SWEEP_BATCH).await {
            Ok(ids) if ids.is_empty() => return,
            Ok(ids) => ids,
            Err(e) => {
                tracing::warn!(error = %e, "bridge: sweep failed");
                return;
            }
        };
        let token = match management.token().await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = ?e, "bridge: cannot delete unused Auth0 applications");
                return;
            }
        };
        let mut deleted = 0;
        for id in unused {
            let mut url = match url::Url::parse(&format!(
                "{}/api/v2/clients/",
                self.issuer.trim_end_matches('/')
            )) {
                Ok(u) => u,
                Err(_) => return,
            };
            if let Ok(mut segments) = url.path_segments_mut() {
                segments.pop_if_empty().push(&id);
            }
            let status = match self
                .http
                .delete(url)
                .bearer_auth(token.expose_secret())
                .send()
                .await
            {
                Ok(r) => r.status().as_u16(),
                Err(e) => {
                    tracing::warn!(error = %e.without_url(), "bridge: cannot delete an unused Auth0 application");
                    break;
                }
            };
            // 404: already deleted by hand; forget it too.
            if !matches!(status, 200 | 204 | 404) {
                tracing::warn!(
                    status,
                    "bridge: Auth0 refused to delete an unused application (delete:clients missing?)"
                );
                break;
            }
            if let Err(e) = self.store.delete_bridge_client(&id).await {
                tracing::warn!(error = %e, "bridge: sweep failed");
                break;
            }
            deleted += 1;
        }
        if deleted > 0 {
            tracing::info!(deleted, "bridge: deleted unused Auth0 applications");
        }
    }

    async fn create_auth0_client(
        &self,
        management_token: &str,
        metadata: ClientMetadata,
        callback: &str,
    ) -> Result<Relayed, BridgeError> {
        let method = metadata.auth_method();
        let body = json!({
            "name": metadata.client_name.clone().unwrap_or_else(|| "MCP client".to_owned()),
            "app_type": if method == AuthMethod::None { "native" } else { "regular_web" },
            "callbacks": [callback],
            "grant_types": ["authorization_code", "refresh_token"],
            "token_endpoint_auth_method": method.as_str(),
            "oidc_conformant": true,
            // Third party: Auth0 always asks the user's consent for it
            // (first-party applications skip consent by default).
            "is_first_party": false,
            "client_metadata": {"created_by": "mcpgate"},
        });
        let url = format!("{}/api/v2/clients", self.issuer.trim_end_matches('/'));
        let created = self
            .relay(
                self.http
                    .post(&url)
                    .bearer_auth(management_token)
                    .json(&body),
            )
            .await?;
        if created.status != 201 && created.status != 200 {
            // Auth0's 4xx here is about our request or our rights, not the client's input.
            return Err(BridgeError::Idp(format!(
                "Management API create client: HTTP {} {}",
                created.status,
                created.body["message"].as_str().unwrap_or("")
            )));
        }
        let new_id = created.body["client_id"]
            .as_str()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| BridgeError::Idp("created client has no client_id".into()))?;
        let mut response =
            serde_json::to_value(&metadata).map_err(|e| BridgeError::Internal(e.to_string()))?;
        if let Some(obj) = response.as_object_mut() {
            obj.insert("client_id".into(), json!(new_id));
            obj.insert("client_id_issued_at".into(), json!(self.clock.now()));
            if method != AuthMethod::None
                && let Some(secret) = created.body["client_secret"].as_str()
            {
                obj.insert("client_secret".into(), json!(secret));
                obj.insert("client_secret_expires_at".into(), json!(0));
            }
        }
        Ok(Relayed {
            status: 201,
            body: response,
        })
    }
}

/// Every known field within its caps; `client_name` free of control and
/// format characters (a bidi override would let a name read as another on
/// the consent page).
fn check_limits(body: &Value) -> Result<(), BridgeError> {
    let Some(obj) = body.as_object() else {
        return Err(BridgeError::InvalidClientMetadata(
            "the body must be a JSON object".to_owned(),
        ));
    };
    let too_long = |name: &str, max: usize| {
        BridgeError::InvalidClientMetadata(format!("{name} is longer than {max} characters"))
    };
    for (name, max_len, max_items) in FIELDS {
        let Some(value) = obj.get(*name) else {
            continue;
        };
        match value {
            Value::String(s) if *max_items == 0 => {
                if s.chars().count() > *max_len {
                    return Err(too_long(name, *max_len));
                }
            }
            Value::Array(items) if *max_items > 0 => {
                if items.len() > *max_items {
                    return Err(BridgeError::InvalidClientMetadata(format!(
                        "{name} lists more than {max_items} entries"
                    )));
                }
                for item in items {
                    match item.as_str() {
                        Some(s) if s.chars().count() <= *max_len => {}
                        Some(_) => return Err(too_long(name, *max_len)),
                        None => {
                            return Err(BridgeError::InvalidClientMetadata(format!(
                                "{name} must list strings"
                            )));
                        }
                    }
                }
            }
            Value::Null => {}
            _ => {
                return Err(BridgeError::InvalidClientMetadata(format!(
                    "{name} has the wrong type"
                )));
            }
        }
    }
    if let Some(name) = obj.get("client_name").and_then(Value::as_str)
        && !crate::visible_text::is_visible_text(name)
    {
        return Err(BridgeError::InvalidClientMetadata(
            "client_name may not contain control or formatting characters".to_owned(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversized_fields_and_lists_are_refused() {
        let ok = json!({"redirect_uris": ["https://a.example/cb"], "client_name": "Claude"});
        assert!(check_limits(&ok).is_ok());
        for bad in [
            json!({"client_name": "x".repeat(201)}),
            json!({"client_name": "Claude\u{202e}gnp.exe"}),
            json!({"redirect_uris": vec!["https://a.example/cb"; 11]}),
            json!({"redirect_uris": [format!("https://a.example/{}", "x".repeat(2000))]}),
            json!({"contacts": vec!["a@b.example"; 6]}),
            json!({"contacts": ["x".repeat(321)]}),
            json!({"software_id": "x".repeat(201)}),
            json!({"grant_types": "authorization_code"}),
            json!({"redirect_uris": [1]}),
        ] {
            assert!(check_limits(&bad).is_err(), "{bad}");
        }
    }
}
