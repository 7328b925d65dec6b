//! Lists merged from the upstreams, with how long each may be cached.
//!
//! A 2026-07-28 result says how long it stays fresh (`ttlMs`); a list
//! merged from several upstreams is as fresh as its stalest part, so it
//! takes the shortest. Merged lists keep the upstreams' configured order
//! and each upstream's own order, so a client's prompt cache stays valid.

use std::sync::Arc;

use rmcp::model::{
    ClientRequest, ListPromptsRequest, ListResourceTemplatesRequest, ListResourcesRequest,
    ListToolsRequest, PaginatedRequestParams, Prompt, Resource, ResourceTemplate, ServerResult,
    Tool,
};
use tokio_util::sync::CancellationToken;

use super::{Gateway, GatewayError, Upstream, link::Link, locks::write};
use crate::auth::Principal;

/// Items merged from the upstreams and the shortest `ttlMs` any of them
/// gave (`None`: none gave one).
#[derive(Debug)]
pub struct Listed<T> {
    pub items: Vec<T>,
    pub ttl_ms: Option<u64>,
}

impl<T> Default for Listed<T> {
    fn default() -> Self {
        Listed {
            items: Vec::new(),
            ttl_ms: None,
        }
    }
}

impl<T> Listed<T> {
    fn merge(&mut self, other: Listed<T>) {
        self.items.extend(other.items);
        self.ttl_ms = shortest(self.ttl_ms, other.ttl_ms);
    }
}

/// The shorter of two freshness times; an absent one does not count.
pub fn shortest(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Every page of a paginated list.
macro_rules! list_all {
    ($link:expr, $cancel:expr, $Req:ident, $Res:ident, $field:ident, $upstream:expr, $method:expr) => {{
        let mut items = Vec::new();
        let mut ttl_ms: Option<u64> = None;
        let mut cursor: Option<String> = None;
        // A bounded number of pages: an upstream that loops its cursor cannot hang a list.
        for _ in 0..64 {
            let params = cursor
                .take()
                .map(|c| PaginatedRequestParams::default().with_cursor(Some(c)));
            let answer = $link
                .request(
                    ClientRequest::$Req($Req {
                        method: Default::default(),
                        params,
                        extensions: Default::default(),
                    }),
                    None,
                    $cancel,
                )
                .await?;
            let ServerResult::$Res(page) = answer else {
                return Err(GatewayError::UnexpectedResult {
                    upstream: $upstream.to_owned(),
                    method: $method.to_owned(),
                });
            };
            ttl_ms = shortest(ttl_ms, page.ttl_ms);
            items.extend(page.$field);
            match page.next_cursor {
                Some(next) if !next.is_empty() => cursor = Some(next),
                _ => break,
            }
        }
        Ok::<_, GatewayError>(Listed { items, ttl_ms })
    }};
}

impl Gateway {
    /// Lists from every upstream at once; one failing leaves the others.
    async fn gather<T, F, Fut>(&self, principal: &Principal, what: &str, list: F) -> Listed<T>
    where
        F: Fn(Arc<Upstream>, Arc<Link>) -> Fut,
        Fut: std::future::Future<Output = Result<Listed<T>, GatewayError>>,
    {
        let list = &list;
        let calls = self.upstreams.iter().map(|u| async move {
            self.require_connection(u, principal).await?;
            let link = self.link(u, principal)?;
            list(u.clone(), link).await
        });
        let mut all = Listed::default();
        for (result, upstream) in futures::future::join_all(calls)
            .await
            .into_iter()
            .zip(&self.upstreams)
        {
            match result {
                Ok(listed) => all.merge(listed),
                // Not connected yet: `list_tools` shows what it can.
                Err(GatewayError::ConnectRequired(_)) => {}
                Err(e) => {
                    tracing::warn!(upstream = %upstream.config.name, error = %e, "{what} from an upstream failed; listing the others")
                }
            }
        }
        all
    }

    /// Tools of every upstream; a user who has not connected a `user_auth`
    /// upstream sees its placeholders, in a list that is stale at once
    /// (`ttlMs` 0), so the client asks again after connecting.
    pub async fn list_tools(
        &self,
        principal: &Principal,
        cancel: &CancellationToken,
    ) -> Listed<Tool> {
        let mut tools = self.list_connected_tools(principal, cancel).await;
        let placeholders = self.unconnected_tools(principal).await;
        if !placeholders.is_empty() {
            tools.merge(Listed {
                items: placeholders,
                ttl_ms: Some(0),
            });
        }
        tools
    }

    async fn list_connected_tools(
        &self,
        principal: &Principal,
        cancel: &CancellationToken,
    ) -> Listed<Tool> {
        self.gather(principal, "tools/list", |u, link| async move {
            let Listed {
                items: tools,
                ttl_ms,
            } = list_all!(
                link,
                cancel,
                ListToolsRequest,
                ListToolsResult,
                tools,
                u.config.name,
                "tools/list"
            )?;
            {
                let mut names = write(&u.names);
                names.retain(|n| !tools.iter().any(|t| t.name == *n));
                names.extend(tools.iter().map(|t| t.name.to_string()));
            }
            if u.config.user_auth.is_some() {
                *write(&u.seen_tools) = tools.clone();
            }
            Ok(Listed {
                items: tools
                    .into_iter()
                    .map(|mut t| {
                        t.name = self.exposed(&u, &t.name).into();
                        t
                    })
                    .collect(),
                ttl_ms,
            })
        })
        .await
    }

    pub async fn list_prompts(
        &self,
        principal: &Principal,
        cancel: &CancellationToken,
    ) -> Listed<Prompt> {
        self.gather(principal, "prompts/list", |u, link| async move {
            let Listed {
                items: prompts,
                ttl_ms,
            } = list_all!(
                link,
                cancel,
                ListPromptsRequest,
                ListPromptsResult,
                prompts,
                u.config.name,
                "prompts/list"
            )?;
            {
                let mut names = write(&u.names);
                for p in &prompts {
                    if !names.contains(&p.name) {
                        names.push(p.name.clone());
                    }
                }
            }
            Ok(Listed {
                items: prompts
                    .into_iter()
                    .map(|mut p| {
                        p.name = self.exposed(&u, &p.name);
                        p
                    })
                    .collect(),
                ttl_ms,
            })
        })
        .await
    }

    pub async fn list_resources(
        &self,
        principal: &Principal,
        cancel: &CancellationToken,
    ) -> Listed<Resource> {
        self.gather(principal, "resources/list", |u, link| async move {
            let Listed {
                items: resources,
                ttl_ms,
            } = list_all!(
                link,
                cancel,
                ListResourcesRequest,
                ListResourcesResult,
                resources,
                u.config.name,
                "resources/list"
            )?;
            *write(&u.resources) = resources.iter().map(|r| r.uri.clone()).collect();
            Ok(Listed {
                items: resources,
                ttl_ms,
            })
        })
        .await
    }

    pub async fn list_resource_templates(
        &self,
        principal: &Principal,
        cancel: &CancellationToken,
    ) -> Listed<ResourceTemplate> {
        self.gather(
            principal,
            "resources/templates/list",
            |u, link| async move {
                let Listed {
                    items: templates,
                    ttl_ms,
                } = list_all!(
                    link,
                    cancel,
                    ListResourceTemplatesRequest,
                    ListResourceTemplatesResult,
                    resource_templates,
                    u.config.name,
                    "resources/templates/list"
                )?;
                // The literal part before the first variable routes reads.
                *write(&u.templates) = templates
                    .iter()
                    .map(|t| {
                        let uri = &t.uri_template;
                        uri.split('{').next().unwrap_or(uri).to_owned()
                    })
                    .collect();
                Ok(Listed {
                    items: templates,
                    ttl_ms,
                })
            },
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_merged_list_is_as_fresh_as_its_stalest_part() {
        assert_eq!(shortest(None, None), None);
        assert_eq!(shortest(Some(5), None), Some(5));
        assert_eq!(shortest(None, Some(7)), Some(7));
        assert_eq!(shortest(Some(5), Some(0)), Some(0));
        let mut all = Listed::default();
        all.merge(Listed {
            items: vec![1, 2],
            ttl_ms: Some(30_000),
        });
        all.merge(Listed {
            items: vec![3],
            ttl_ms: None,
        });
        all.merge(Listed {
            items: vec![4],
            ttl_ms: Some(1_000),
        });
        assert_eq!(all.items, vec![1, 2, 3, 4]);
        assert_eq!(all.ttl_ms, Some(1_000));
    }
}
