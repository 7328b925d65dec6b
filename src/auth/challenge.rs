//! `WWW-Authenticate` challenges as a client reads them (RFC 6750 §3,
//! RFC 9110 §11.2): mcpgate's doctor checks a server's, and the gateway
//! follows an OAuth-protected upstream's to its metadata.

/// One auth-param of a challenge, remembering whether it was quoted.
#[derive(Debug, PartialEq, Eq)]
pub struct AuthParam {
    pub name: String,
    pub value: String,
    pub quoted: bool,
}

/// The parameters of the `Bearer` challenge in a `WWW-Authenticate` value.
pub fn parse_bearer(header: &str) -> Option<Vec<AuthParam>> {
    let trimmed = header.trim_start();
    let rest = trimmed
        .get(..6)
        .filter(|s| s.eq_ignore_ascii_case("bearer"))
        .map(|_| &trimmed[6..])?;
    let mut params = Vec::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let name: String = std::iter::from_fn(|| chars.next_if(|c| *c != '=' && *c != ','))
            .collect::<String>()
            .trim()
            .to_ascii_lowercase();
        if name.is_empty() {
            break;
        }
        if chars.next() != Some('=') {
            continue;
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let (value, quoted) = if chars.next_if_eq(&'"').is_some() {
            let mut value = String::new();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
            (value, true)
        } else {
            let value: String = std::iter::from_fn(|| chars.next_if(|c| *c != ',')).collect();
            (value.trim().to_owned(), false)
        };
        params.push(AuthParam {
            name,
            value,
            quoted,
        });
    }
    Some(params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_parameters_keep_whether_they_were_quoted() {
        let params = parse_bearer(
            r#"Bearer error="invalid_token", resource_metadata="https://a/b?x=1", scope="a b""#,
        )
        .unwrap();
        assert_eq!(params.len(), 3);
        assert_eq!(params[1].value, "https://a/b?x=1");
        assert!(params.iter().all(|p| p.quoted));
        let params = parse_bearer("Bearer resource_metadata=https://a/b, scope=x").unwrap();
        assert_eq!(params[0].value, "https://a/b");
        assert!(!params[0].quoted);
        assert_eq!(params[1].value, "x");
        assert!(parse_bearer("Basic realm=\"x\"").is_none());
        assert_eq!(parse_bearer("Bearer").unwrap(), vec![]);
    }

    #[test]
    fn bearer_challenges_are_read_with_escapes_any_case_and_bare_tokens() {
        let params = parse_bearer(
            r#"Bearer realm="mcp", error="invalid_token", resource_metadata="https://a.example/.well-known/oauth-protected-resource/mcp", scope="repo read:org""#,
        )
        .unwrap();
        let value = |name: &str| {
            params
                .iter()
                .find(|p| p.name == name)
                .unwrap()
                .value
                .clone()
        };
        assert_eq!(
            value("resource_metadata"),
            "https://a.example/.well-known/oauth-protected-resource/mcp"
        );
        assert_eq!(value("scope"), "repo read:org");
        let params = parse_bearer(r#"bearer error=insufficient_scope,scope="a \"b\"""#).unwrap();
        assert_eq!(
            (params[0].value.as_str(), params[1].value.as_str()),
            ("insufficient_scope", "a \"b\"")
        );
    }
}
