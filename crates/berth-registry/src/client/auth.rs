//! The client's side of registry auth: parsing `WWW-Authenticate` challenges, the token
//! endpoint's answer, and the per-scope token cache.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde::Deserialize;

/// One challenge of a `WWW-Authenticate` header, e.g.
/// `Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="…"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// The scheme, lower-cased: `bearer` or `basic`.
    pub scheme: String,
    /// The parameters, keys lower-cased.
    pub params: HashMap<String, String>,
}

impl Challenge {
    /// A parameter by (lower-case) name.
    pub fn param(&self, key: &str) -> Option<&str> {
        self.params.get(key).map(String::as_str)
    }
}

/// Parses a `WWW-Authenticate` value into its challenges (RFC 7235: a scheme token followed
/// by comma-separated `key=value` or `key="quoted, value"` parameters; several challenges
/// may share one header).
pub fn parse_www_authenticate(value: &str) -> Vec<Challenge> {
    let mut out: Vec<Challenge> = Vec::new();
    let b = value.as_bytes();
    let mut i = 0;
    let skip_ws_commas = |i: &mut usize| {
        while *i < b.len() && (b[*i] == b' ' || b[*i] == b',' || b[*i] == b'\t') {
            *i += 1;
        }
    };
    let token = |i: &mut usize| -> String {
        let start = *i;
        while *i < b.len() && !matches!(b[*i], b' ' | b'\t' | b',' | b'=') {
            *i += 1;
        }
        value[start..*i].to_string()
    };
    loop {
        skip_ws_commas(&mut i);
        if i >= b.len() {
            break;
        }
        let word = token(&mut i);
        // A word followed by `=` is a parameter of the current challenge; otherwise it
        // starts a new challenge.
        let mut j = i;
        while j < b.len() && b[j] == b' ' {
            j += 1;
        }
        if j < b.len() && b[j] == b'=' && !out.is_empty() {
            i = j + 1;
            while i < b.len() && b[i] == b' ' {
                i += 1;
            }
            let val = if i < b.len() && b[i] == b'"' {
                i += 1;
                let mut s = String::new();
                while i < b.len() && b[i] != b'"' {
                    if b[i] == b'\\' && i + 1 < b.len() {
                        i += 1;
                    }
                    // Push whole UTF-8 characters.
                    let ch = value[i..].chars().next().expect("in bounds");
                    s.push(ch);
                    i += ch.len_utf8();
                }
                i += 1;
                s
            } else {
                let start = i;
                while i < b.len() && b[i] != b',' {
                    i += 1;
                }
                value[start..i].trim().to_string()
            };
            if let Some(last) = out.last_mut() {
                last.params.insert(word.to_lowercase(), val);
            }
        } else if !word.is_empty() {
            out.push(Challenge {
                scheme: word.to_lowercase(),
                params: HashMap::new(),
            });
        } else {
            i += 1;
        }
    }
    out
}

/// What a token endpoint answers.
#[derive(Debug, Deserialize)]
pub(crate) struct TokenResponse {
    #[serde(default)]
    pub(crate) token: Option<String>,
    #[serde(default)]
    pub(crate) access_token: Option<String>,
    #[serde(default)]
    pub(crate) expires_in: Option<u64>,
}

impl TokenResponse {
    /// The token (`token`, or OAuth's `access_token`) and how long to trust it. Docker's
    /// rule: no or too small `expires_in` means 60 seconds.
    pub(crate) fn into_token(self) -> Option<(String, Duration)> {
        let token = self.token.filter(|t| !t.is_empty()).or(self.access_token)?;
        let secs = self.expires_in.unwrap_or(60).max(60);
        Some((token, Duration::from_secs(secs)))
    }
}

/// Bearer tokens by scope set, each with its expiry.
#[derive(Debug, Default)]
pub(crate) struct TokenCache {
    tokens: HashMap<String, (String, Instant)>,
}

/// Tokens are refreshed this long before they expire.
const EXPIRY_SLACK: Duration = Duration::from_secs(10);

impl TokenCache {
    /// The cache key of a set of scopes (order-independent).
    pub(crate) fn key(scopes: &[String]) -> String {
        let mut s: Vec<&str> = scopes.iter().map(String::as_str).collect();
        s.sort_unstable();
        s.dedup();
        s.join(" ")
    }

    /// A token still valid for `key`.
    pub(crate) fn get(&self, key: &str) -> Option<String> {
        self.tokens
            .get(key)
            .filter(|(_, exp)| Instant::now() + EXPIRY_SLACK < *exp)
            .map(|(t, _)| t.clone())
    }

    /// Remembers a token.
    pub(crate) fn put(&mut self, key: String, token: String, ttl: Duration) {
        self.tokens.insert(key, (token, Instant::now() + ttl));
    }

    /// Forgets a token the registry refused.
    pub(crate) fn remove(&mut self, key: &str) {
        self.tokens.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_docker_hub_and_basic_challenges() {
        let c = parse_www_authenticate(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull,push""#,
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].scheme, "bearer");
        assert_eq!(c[0].param("realm"), Some("https://auth.docker.io/token"));
        assert_eq!(c[0].param("service"), Some("registry.docker.io"));
        assert_eq!(
            c[0].param("scope"),
            Some("repository:library/busybox:pull,push")
        );

        let c = parse_www_authenticate(r#"Basic realm="Registry Realm""#);
        assert_eq!(c[0].scheme, "basic");
        assert_eq!(c[0].param("realm"), Some("Registry Realm"));

        let c = parse_www_authenticate(
            r#"Basic realm="a, \"b\"", Bearer realm=https://x/t, error="insufficient_scope""#,
        );
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].param("realm"), Some("a, \"b\""));
        assert_eq!(c[1].scheme, "bearer");
        assert_eq!(c[1].param("realm"), Some("https://x/t"));
        assert_eq!(c[1].param("error"), Some("insufficient_scope"));
        assert!(parse_www_authenticate("").is_empty());
        assert_eq!(parse_www_authenticate("Negotiate")[0].scheme, "negotiate");
    }

    #[test]
    fn token_responses_and_cache() {
        let t: TokenResponse =
            serde_json::from_str(r#"{"access_token":"a","expires_in":300}"#).unwrap();
        assert_eq!(
            t.into_token(),
            Some(("a".to_string(), Duration::from_secs(300)))
        );
        let t: TokenResponse =
            serde_json::from_str(r#"{"token":"t","access_token":"a","expires_in":5}"#).unwrap();
        assert_eq!(
            t.into_token(),
            Some(("t".to_string(), Duration::from_secs(60)))
        );
        let t: TokenResponse = serde_json::from_str(r#"{}"#).unwrap();
        assert!(t.into_token().is_none());

        let key = TokenCache::key(&["b".into(), "a".into(), "a".into()]);
        assert_eq!(key, "a b");
        let mut cache = TokenCache::default();
        cache.put(key.clone(), "tok".into(), Duration::from_secs(60));
        assert_eq!(cache.get(&key).as_deref(), Some("tok"));
        cache.put("short".into(), "x".into(), Duration::from_secs(5));
        assert!(cache.get("short").is_none(), "inside the refresh slack");
        cache.remove(&key);
        assert!(cache.get(&key).is_none());
    }
}
