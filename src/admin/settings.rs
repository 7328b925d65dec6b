//! `[admin]`: who holds the admin role when users sign in at an identity
//! provider (proxy mode). Local users get the role from the CLI or the
//! console; identity-provider users get it from this mapping, applied at
//! each sign-in: granted when they match, taken away when they no longer do.
//! Without a mapping the role of identity-provider users is left to the CLI.

use serde::{Deserialize, Serialize};

use crate::idp::{AdminRoleRule, Identity, claim_values};

#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    /// The claim `groups` are matched in (a list, or a space-separated
    /// string), e.g. `roles` or Auth0's `https://example.com/roles`. Default:
    /// the provider's groups claim (`groups`; `cognito:groups` with Cognito).
    pub claim: Option<String>,
    /// Values of that claim (groups, roles) whose holders are admins.
    #[serde(default)]
    pub groups: Vec<String>,
    /// The provider's subjects (`sub`) of admins.
    #[serde(default)]
    pub subjects: Vec<String>,
    /// Verified emails of admins (case does not matter).
    #[serde(default)]
    pub emails: Vec<String>,
}

/// `[admin]`, validated: the identity-provider claims that make an admin.
#[derive(Debug, Default, Clone, Serialize)]
pub struct AdminRoles {
    /// `None`: the groups the identity provider's preset reads.
    pub claim: Option<String>,
    pub groups: Vec<String>,
    pub subjects: Vec<String>,
    pub emails: Vec<String>,
}

impl AdminRoles {
    /// Whether the mapping decides the role (some entry is configured).
    pub fn is_mapped(&self) -> bool {
        !(self.groups.is_empty() && self.subjects.is_empty() && self.emails.is_empty())
    }

    /// The role `identity` gets at this sign-in: `None` when no mapping is
    /// configured (the role stays as an admin set it).
    pub fn role_of(&self, identity: &Identity) -> Option<bool> {
        if !self.is_mapped() {
            return None;
        }
        let by_email = identity.email_verified
            && identity
                .email
                .as_deref()
                .is_some_and(|e| self.emails.contains(&e.to_lowercase()));
        let groups = match &self.claim {
            Some(claim) => claim_values(&identity.claims, claim),
            None => identity.groups.clone(),
        };
        Some(
            self.subjects.contains(&identity.subject)
                || groups.iter().any(|g| self.groups.contains(g))
                || by_email,
        )
    }
}

impl AdminRoleRule for AdminRoles {
    fn admin_role(&self, identity: &Identity) -> Option<bool> {
        self.role_of(identity)
    }
}

/// Check `[admin]`; `signs_in_upstream` is whether the mode may sign users in
/// at an identity provider (proxy, or auto deciding on proxy).
pub fn validate(raw: &RawAdmin, signs_in_upstream: bool, errors: &mut Vec<String>) -> AdminRoles {
    for (key, list) in [
        ("groups", &raw.groups),
        ("subjects", &raw.subjects),
        ("emails", &raw.emails),
    ] {
        if list.iter().any(|v| v.trim().is_empty() || v.trim() != v) {
            errors.push(format!(
                "admin.{key}: entries may not be empty or start or end with spaces"
            ));
        }
    }
    if raw.claim.as_deref().is_some_and(|c| c.trim().is_empty()) {
        errors.push("admin.claim: the name of a claim, e.g. \"roles\"".to_owned());
    }
    if raw.claim.is_some() && raw.groups.is_empty() {
        errors.push(
            "admin.claim: names where admin.groups are looked up; list the values in admin.groups"
                .to_owned(),
        );
    }
    if raw.emails.iter().any(|e| !e.contains('@')) {
        errors.push("admin.emails: each entry is an email address".to_owned());
    }
    let roles = AdminRoles {
        claim: raw.claim.clone(),
        groups: raw.groups.clone(),
        subjects: raw.subjects.clone(),
        emails: raw.emails.iter().map(|e| e.to_lowercase()).collect(),
    };
    if roles.is_mapped() && !signs_in_upstream {
        errors.push(
            "admin: groups, subjects and emails map identity-provider users to the admin role; they need auth.mode = \"proxy\" (local users get the role with: mcpgate users set-admin NAME)".to_owned(),
        );
    }
    roles
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(sub: &str, email: Option<&str>, groups: &[&str]) -> Identity {
        Identity {
            subject: sub.to_owned(),
            username: sub.to_owned(),
            login: None,
            email: email.map(str::to_owned),
            name: None,
            groups: groups.iter().map(|g| g.to_string()).collect(),
            email_verified: true,
            claims: serde_json::Map::new(),
        }
    }

    #[test]
    fn the_mapping_grants_and_withdraws_and_is_silent_when_unset() {
        let roles = AdminRoles {
            claim: None,
            groups: vec!["mcpgate-admins".into()],
            subjects: vec!["root-sub".into()],
            emails: vec!["boss@example.com".into()],
        };
        assert_eq!(
            roles.role_of(&identity("u1", None, &["eng", "mcpgate-admins"])),
            Some(true)
        );
        assert_eq!(roles.role_of(&identity("u1", None, &["eng"])), Some(false));
        assert_eq!(roles.role_of(&identity("root-sub", None, &[])), Some(true));
        assert_eq!(
            roles.role_of(&identity("u2", Some("Boss@Example.com"), &[])),
            Some(true)
        );
        let mut unverified = identity("u2", Some("boss@example.com"), &[]);
        unverified.email_verified = false;
        assert_eq!(roles.role_of(&unverified), Some(false));
        // Group names are compared exactly (providers' names are case-sensitive).
        assert_eq!(
            roles.role_of(&identity("u3", None, &["MCPGATE-ADMINS"])),
            Some(false)
        );
        assert_eq!(
            AdminRoles::default().role_of(&identity("u1", None, &["mcpgate-admins"])),
            None
        );
    }

    #[test]
    fn a_claim_of_its_own_is_read_from_the_asserted_claims() {
        let roles = AdminRoles {
            claim: Some("https://example.com/roles".into()),
            groups: vec!["mcp-admin".into()],
            ..AdminRoles::default()
        };
        let mut identity = identity("u1", None, &["mcp-admin"]);
        // The provider's groups no longer count: only the named claim does.
        assert_eq!(roles.role_of(&identity), Some(false));
        identity.claims.insert(
            "https://example.com/roles".into(),
            serde_json::json!(["viewer", "mcp-admin"]),
        );
        assert_eq!(roles.role_of(&identity), Some(true));
        identity.claims.insert(
            "https://example.com/roles".into(),
            serde_json::json!("viewer"),
        );
        assert_eq!(roles.role_of(&identity), Some(false));
    }

    #[test]
    fn validation_refuses_blank_entries_and_a_mapping_without_an_identity_provider() {
        let raw = RawAdmin {
            groups: vec!["admins".into()],
            ..RawAdmin::default()
        };
        let mut errors = Vec::new();
        validate(&raw, true, &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        validate(&raw, false, &mut errors);
        assert!(errors[0].contains("auth.mode = \"proxy\""), "{errors:?}");
        let mut errors = Vec::new();
        let raw = RawAdmin {
            groups: vec![" ".into()],
            emails: vec!["nobody".into()],
            ..RawAdmin::default()
        };
        validate(&raw, true, &mut errors);
        assert_eq!(errors.len(), 2, "{errors:?}");
        let mut errors = Vec::new();
        validate(&RawAdmin::default(), false, &mut errors);
        assert!(errors.is_empty());
    }
}
