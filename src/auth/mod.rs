//! Who is calling. Until token validation lands every caller is the
//! anonymous principal of `auth.mode = "none"`.

use std::collections::BTreeSet;

/// The authenticated caller, available to every tool handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub issuer: String,
    pub subject: String,
    pub client_id: Option<String>,
    pub scopes: BTreeSet<String>,
    pub audience: Vec<String>,
    /// Epoch seconds; `None` for principals that do not expire.
    pub expires_at: Option<i64>,
}

impl Principal {
    /// The single caller of an unauthenticated (loopback development) server.
    pub fn anonymous() -> Self {
        Principal {
            issuer: "mcpgate:none".to_owned(),
            subject: "anonymous".to_owned(),
            client_id: None,
            scopes: BTreeSet::new(),
            audience: Vec::new(),
            expires_at: None,
        }
    }

    /// A stable key for data owned by this principal. Subjects are only
    /// unique per issuer, so both are part of it.
    pub fn owner_key(&self) -> String {
        format!("{}|{}", self.issuer, self.subject)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_key_separates_issuers() {
        let a = Principal {
            issuer: "https://a".into(),
            ..Principal::anonymous()
        };
        let b = Principal {
            issuer: "https://b".into(),
            ..Principal::anonymous()
        };
        assert_ne!(a.owner_key(), b.owner_key());
    }
}
