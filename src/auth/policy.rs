//! Who may use which tool, resource or prompt. Rules from `[[policy]]` come
//! first, in order: a rule applies when one of its patterns names the item and
//! the caller meets all its conditions (subjects, groups, claims); the first
//! rule that applies decides. `allow` rules may require scopes, `deny` rules
//! refuse outright. Then the built-in toolsets' defaults; an item no rule
//! names is allowed.

use std::collections::{BTreeMap, BTreeSet};

use super::Principal;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemKind {
    Tool,
    Resource,
    Prompt,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Effect {
    #[default]
    Allow,
    Deny,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct ScopeRule {
    /// Tool-name patterns; `*` matches any run of characters.
    pub tools: Vec<String>,
    /// Resource-URI patterns.
    pub resources: Vec<String>,
    /// Prompt-name patterns.
    pub prompts: Vec<String>,
    /// Scopes an `allow` rule requires.
    pub scopes: BTreeSet<String>,
    pub effect: Effect,
    /// Conditions on the caller; empty means anyone.
    pub subjects: Vec<String>,
    pub groups: Vec<String>,
    pub claims: BTreeMap<String, String>,
}

/// What the policy says about one caller and one item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Allowed once the caller holds these scopes too (`insufficient_scope`).
    NeedScopes(BTreeSet<String>),
    /// Refused whatever the caller's scopes.
    Deny,
}

#[derive(Debug, Clone)]
pub struct AccessPolicy {
    rules: Vec<ScopeRule>,
}

fn rule(tools: &[&str], scope: &str) -> ScopeRule {
    ScopeRule {
        tools: tools.iter().map(|t| (*t).to_owned()).collect(),
        scopes: BTreeSet::from([scope.to_owned()]),
        ..ScopeRule::default()
    }
}

/// The built-in toolsets' scopes.
pub fn default_rules() -> Vec<ScopeRule> {
    vec![
        rule(&["search", "fetch"], "docs:read"),
        rule(&["read_note", "list_notes"], "notes:read"),
        rule(
            &["create_note", "update_note", "delete_note"],
            "notes:write",
        ),
        rule(&["add", "subtract", "multiply", "divide"], "calc"),
    ]
}

impl ScopeRule {
    fn names(&self, kind: ItemKind, name: &str) -> bool {
        let patterns = match kind {
            ItemKind::Tool => &self.tools,
            ItemKind::Resource => &self.resources,
            ItemKind::Prompt => &self.prompts,
        };
        patterns.iter().any(|p| glob_match(p, name))
    }

    fn applies_to(&self, principal: &Principal) -> bool {
        (self.subjects.is_empty() || self.subjects.contains(&principal.subject))
            && (self.groups.is_empty() || self.groups.iter().any(|g| principal.groups.contains(g)))
            && self
                .claims
                .iter()
                .all(|(name, value)| principal.claim(name).as_deref() == Some(value.as_str()))
    }
}

impl AccessPolicy {
    pub fn new(configured: Vec<ScopeRule>) -> Self {
        let mut rules = configured;
        rules.extend(default_rules());
        AccessPolicy { rules }
    }

    pub fn decide(&self, principal: &Principal, kind: ItemKind, name: &str) -> Decision {
        let Some(rule) = self
            .rules
            .iter()
            .find(|r| r.names(kind, name) && r.applies_to(principal))
        else {
            return Decision::Allow;
        };
        match rule.effect {
            Effect::Deny => Decision::Deny,
            Effect::Allow => {
                let missing: BTreeSet<String> =
                    rule.scopes.difference(&principal.scopes).cloned().collect();
                if missing.is_empty() {
                    Decision::Allow
                } else {
                    Decision::NeedScopes(rule.scopes.clone())
                }
            }
        }
    }

    pub fn allows(&self, principal: &Principal, kind: ItemKind, name: &str) -> bool {
        self.decide(principal, kind, name) == Decision::Allow
    }

    /// The allow rules that require `scope`: what it opens (for the consent
    /// page's default wording of a policy scope).
    pub fn rules_requiring<'a>(&'a self, scope: &'a str) -> impl Iterator<Item = &'a ScopeRule> {
        self.rules
            .iter()
            .filter(move |r| r.effect == Effect::Allow && r.scopes.contains(scope))
    }

    /// Every scope some rule can require, for `scopes_supported`.
    pub fn all_scopes(&self) -> BTreeSet<String> {
        self.rules
            .iter()
            .flat_map(|r| r.scopes.iter().cloned())
            .collect()
    }
}

pub fn glob_match(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, rest) = parts.split_first().unwrap_or((&"", &[]));
    let Some(mut remaining) = text.strip_prefix(first) else {
        return false;
    };
    let (last, middle) = rest.split_last().unwrap_or((&"", &[]));
    for part in middle {
        match remaining.find(part) {
            Some(i) => remaining = &remaining[i + part.len()..],
            None => return false,
        }
    }
    remaining.len() >= last.len() && remaining.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(scopes: &[&str]) -> Principal {
        Principal {
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            ..Principal::anonymous()
        }
    }

    const TOOL: ItemKind = ItemKind::Tool;

    fn need(scope: &str) -> Decision {
        Decision::NeedScopes(BTreeSet::from([scope.to_owned()]))
    }

    #[test]
    fn defaults() {
        let p = AccessPolicy::new(Vec::new());
        assert_eq!(p.decide(&principal(&[]), TOOL, "add"), need("calc"));
        assert!(p.allows(&principal(&["notes:read"]), TOOL, "list_notes"));
        assert!(!p.allows(&principal(&["notes:read"]), TOOL, "create_note"));
        assert_eq!(p.decide(&principal(&[]), TOOL, "unlisted"), Decision::Allow);
    }

    #[test]
    fn configured_rules_override() {
        let p = AccessPolicy::new(vec![ScopeRule {
            tools: vec!["*_note".into()],
            scopes: BTreeSet::from(["admin".to_owned()]),
            ..ScopeRule::default()
        }]);
        assert_eq!(p.decide(&principal(&[]), TOOL, "read_note"), need("admin"));
        assert_eq!(
            p.decide(&principal(&[]), TOOL, "list_notes"),
            need("notes:read")
        );
    }

    #[test]
    fn kinds_are_matched_separately() {
        let p = AccessPolicy::new(vec![
            ScopeRule {
                resources: vec!["file:///secret/*".into()],
                effect: Effect::Deny,
                ..ScopeRule::default()
            },
            ScopeRule {
                prompts: vec!["ev__*".into()],
                scopes: BTreeSet::from(["prompts".to_owned()]),
                ..ScopeRule::default()
            },
        ]);
        let anyone = principal(&[]);
        assert_eq!(
            p.decide(&anyone, ItemKind::Resource, "file:///secret/a"),
            Decision::Deny
        );
        // A tool of the same name is not a resource.
        assert_eq!(p.decide(&anyone, TOOL, "file:///secret/a"), Decision::Allow);
        assert_eq!(
            p.decide(&anyone, ItemKind::Prompt, "ev__x"),
            need("prompts")
        );
        assert_eq!(p.decide(&anyone, TOOL, "ev__x"), Decision::Allow);
    }

    #[test]
    fn conditions_pick_the_rule_for_the_caller() {
        let p = AccessPolicy::new(vec![
            ScopeRule {
                tools: vec!["admin__*".into()],
                groups: vec!["ops".into()],
                ..ScopeRule::default()
            },
            ScopeRule {
                tools: vec!["admin__*".into()],
                claims: BTreeMap::from([("email".to_owned(), "boss@example.com".to_owned())]),
                ..ScopeRule::default()
            },
            ScopeRule {
                tools: vec!["admin__*".into()],
                effect: Effect::Deny,
                ..ScopeRule::default()
            },
        ]);
        let ops = Principal {
            groups: vec!["ops".into()],
            ..principal(&[])
        };
        let boss = Principal {
            email: Some("boss@example.com".into()),
            ..principal(&[])
        };
        let other = Principal {
            subject: "someone".into(),
            groups: vec!["dev".into()],
            email: Some("dev@example.com".into()),
            ..principal(&[])
        };
        assert_eq!(p.decide(&ops, TOOL, "admin__reset"), Decision::Allow);
        assert_eq!(p.decide(&boss, TOOL, "admin__reset"), Decision::Allow);
        assert_eq!(p.decide(&other, TOOL, "admin__reset"), Decision::Deny);
        assert_eq!(p.decide(&other, TOOL, "other"), Decision::Allow);
    }

    #[test]
    fn subject_condition_and_scopes_together() {
        let p = AccessPolicy::new(vec![ScopeRule {
            tools: vec!["x".into()],
            subjects: vec!["alice".into()],
            scopes: BTreeSet::from(["x:call".to_owned()]),
            ..ScopeRule::default()
        }]);
        let alice = Principal {
            subject: "alice".into(),
            ..principal(&[])
        };
        assert_eq!(p.decide(&alice, TOOL, "x"), need("x:call"));
        let alice_scoped = Principal {
            subject: "alice".into(),
            ..principal(&["x:call"])
        };
        assert_eq!(p.decide(&alice_scoped, TOOL, "x"), Decision::Allow);
        // The rule does not apply to bob at all; no other rule names x.
        assert_eq!(p.decide(&principal(&[]), TOOL, "x"), Decision::Allow);
    }

    #[test]
    fn globbing() {
        assert!(glob_match("a*c", "abbbc"));
        assert!(glob_match("*", ""));
        assert!(glob_match("x*y*z", "x1y2z"));
        assert!(!glob_match("a*c", "abcd"));
        assert!(!glob_match("abc", "abcd"));
        assert!(!glob_match("a*a", "a"));
    }
}
