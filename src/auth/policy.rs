//! Which scopes a tool needs. Rules from `[[policy]]` come first (first match
//! wins), then the built-in defaults; a tool no rule names needs no scope.

use std::collections::BTreeSet;

use super::Principal;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeRule {
    /// Tool-name patterns; `*` matches any run of characters.
    pub tools: Vec<String>,
    pub scopes: BTreeSet<String>,
}

#[derive(Debug, Clone)]
pub struct ScopePolicy {
    rules: Vec<ScopeRule>,
}

fn rule(tools: &[&str], scope: &str) -> ScopeRule {
    ScopeRule {
        tools: tools.iter().map(|t| (*t).to_owned()).collect(),
        scopes: BTreeSet::from([scope.to_owned()]),
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

impl ScopePolicy {
    pub fn new(configured: Vec<ScopeRule>) -> Self {
        let mut rules = configured;
        rules.extend(default_rules());
        ScopePolicy { rules }
    }

    /// The scopes calling `tool` requires.
    pub fn required(&self, tool: &str) -> BTreeSet<String> {
        self.rules
            .iter()
            .find(|r| r.tools.iter().any(|p| glob_match(p, tool)))
            .map(|r| r.scopes.clone())
            .unwrap_or_default()
    }

    pub fn allows(&self, principal: &Principal, tool: &str) -> bool {
        self.required(tool).is_subset(&principal.scopes)
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

    #[test]
    fn defaults() {
        let p = ScopePolicy::new(Vec::new());
        assert_eq!(p.required("add"), BTreeSet::from(["calc".to_owned()]));
        assert!(p.allows(&principal(&["notes:read"]), "list_notes"));
        assert!(!p.allows(&principal(&["notes:read"]), "create_note"));
        assert!(p.required("unlisted").is_empty());
    }

    #[test]
    fn configured_rules_override() {
        let p = ScopePolicy::new(vec![ScopeRule {
            tools: vec!["*_note".into()],
            scopes: BTreeSet::from(["admin".to_owned()]),
        }]);
        assert_eq!(
            p.required("read_note"),
            BTreeSet::from(["admin".to_owned()])
        );
        assert_eq!(
            p.required("list_notes"),
            BTreeSet::from(["notes:read".to_owned()])
        );
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
