//! Server-side authentication: htpasswd (bcrypt) users for Basic auth, and a token mode in
//! which the registry's own `/token` endpoint issues HMAC-signed Bearer tokens and the
//! `/v2/` endpoints answer 401 with a `WWW-Authenticate: Bearer realm=…,service=…,scope=…`
//! challenge, as Docker Hub does.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::{HeaderMap, HeaderValue, header};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::errors::{ApiError, ErrorCode};

/// Why an htpasswd file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum HtpasswdError {
    /// The file could not be read.
    #[error("read htpasswd file {path}: {source}")]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A line is not `user:$2y$…` (only bcrypt hashes are accepted, like distribution).
    #[error("htpasswd line {line}: {reason}")]
    Line {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
}

/// Users and their bcrypt hashes.
#[derive(Debug, Default)]
pub struct Htpasswd {
    users: HashMap<String, String>,
    /// sha256 of passwords already checked against bcrypt, so each request does not pay
    /// bcrypt's deliberate cost again.
    verified: Mutex<HashMap<String, [u8; 32]>>,
}

impl Htpasswd {
    /// Parses htpasswd text: `user:hash` lines, `#` comments and blank lines ignored.
    pub fn parse(text: &str) -> Result<Htpasswd, HtpasswdError> {
        let mut users = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let err = |reason: &str| HtpasswdError::Line {
                line: i + 1,
                reason: reason.to_string(),
            };
            let (user, hash) = line.split_once(':').ok_or_else(|| err("missing ':'"))?;
            if user.is_empty() {
                return Err(err("empty user name"));
            }
            if !["$2a$", "$2b$", "$2y$", "$2x$"]
                .iter()
                .any(|p| hash.starts_with(p))
            {
                return Err(err(&format!(
                    "user {user:?} does not have a bcrypt hash (use htpasswd -B)"
                )));
            }
            users.insert(user.to_string(), hash.to_string());
        }
        Ok(Htpasswd {
            users,
            verified: Mutex::default(),
        })
    }

    /// Reads and parses an htpasswd file.
    pub fn load(path: &Path) -> Result<Htpasswd, HtpasswdError> {
        let text = std::fs::read_to_string(path).map_err(|source| HtpasswdError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Htpasswd::parse(&text)
    }

    /// A file line for `user` with `password` hashed by bcrypt (cost 5: tests and small
    /// setups; use `htpasswd -B` for production files).
    pub fn line(user: &str, password: &str) -> String {
        let hash = bcrypt::hash(password, 5).expect("bcrypt cost 5 is valid");
        format!("{user}:{hash}")
    }

    /// Whether the password is right. Blocks for bcrypt's cost on first success per user.
    pub fn verify(&self, user: &str, password: &str) -> bool {
        let Some(hash) = self.users.get(user) else {
            return false;
        };
        let fingerprint: [u8; 32] = Sha256::digest(password.as_bytes()).into();
        let cache = |m: &mut HashMap<String, [u8; 32]>| m.get(user) == Some(&fingerprint);
        if cache(&mut self.verified.lock().unwrap_or_else(|p| p.into_inner())) {
            return true;
        }
        if bcrypt::verify(password, hash).unwrap_or(false) {
            self.verified
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(user.to_string(), fingerprint);
            true
        } else {
            false
        }
    }
}

/// One access grant or requirement: `repository:library/busybox:pull,push`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Access {
    /// `repository` or `registry`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The repository name (or `catalog`).
    pub name: String,
    /// `pull`, `push`, `delete` or `*`.
    pub actions: Vec<String>,
}

impl Access {
    /// Access to a repository.
    pub fn repository(name: &str, actions: &[&str]) -> Access {
        Access {
            kind: "repository".to_string(),
            name: name.to_string(),
            actions: actions.iter().map(|a| a.to_string()).collect(),
        }
    }

    /// Parses a scope string `type:name:actions`.
    pub fn parse_scope(scope: &str) -> Option<Access> {
        let (kind, rest) = scope.split_once(':')?;
        let (name, actions) = rest.rsplit_once(':')?;
        if kind.is_empty() || name.is_empty() {
            return None;
        }
        Some(Access {
            kind: kind.to_string(),
            name: name.to_string(),
            actions: actions
                .split(',')
                .filter(|a| !a.is_empty())
                .map(str::to_string)
                .collect(),
        })
    }

    /// The scope string `type:name:a,b`.
    pub fn scope(&self) -> String {
        format!("{}:{}:{}", self.kind, self.name, self.actions.join(","))
    }

    /// Whether this grant allows `action` on `kind`/`name`.
    fn allows(&self, kind: &str, name: &str, action: &str) -> bool {
        self.kind == kind
            && self.name == name
            && self.actions.iter().any(|a| a == action || a == "*")
    }
}

/// What an authenticated request may do.
#[derive(Debug, Clone)]
pub enum Grant {
    /// Everything (no auth configured, or a valid Basic user).
    All,
    /// What a Bearer token lists.
    Token(Vec<Access>),
}

impl Grant {
    /// Whether every action of every required access is granted.
    pub fn covers(&self, required: &[Access]) -> bool {
        match self {
            Grant::All => true,
            Grant::Token(granted) => required.iter().all(|r| {
                r.actions
                    .iter()
                    .all(|a| granted.iter().any(|g| g.allows(&r.kind, &r.name, a)))
            }),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    iss: String,
    sub: String,
    aud: String,
    iat: u64,
    exp: u64,
    access: Vec<Access>,
}

/// The token service: issues and checks HMAC-SHA256 signed tokens.
#[derive(Debug)]
pub struct TokenService {
    secret: Vec<u8>,
    /// The `service` value in challenges and tokens.
    pub service: String,
    /// The token endpoint URL; `None` derives `<scheme>://<Host>/token` per request.
    pub realm: Option<String>,
    /// How long tokens live.
    pub ttl: Duration,
    /// Users allowed to log in; `None` grants every request everything it asks.
    pub users: Option<Htpasswd>,
    /// Whether anonymous requests get `pull` (Docker Hub's behaviour).
    pub anonymous_pull: bool,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl TokenService {
    /// A token service signing with `secret`.
    pub fn new(secret: &[u8], service: &str) -> TokenService {
        TokenService {
            secret: secret.to_vec(),
            service: service.to_string(),
            realm: None,
            ttl: Duration::from_secs(300),
            users: None,
            anonymous_pull: false,
        }
    }

    fn mac(&self) -> Hmac<Sha256> {
        Hmac::<Sha256>::new_from_slice(&self.secret).expect("hmac accepts any key length")
    }

    /// Issues a token for `subject` with exactly `access`.
    pub fn issue(&self, subject: &str, access: Vec<Access>) -> String {
        let iat = now();
        let claims = Claims {
            iss: "berth-registry".to_string(),
            sub: subject.to_string(),
            aud: self.service.clone(),
            iat,
            exp: iat + self.ttl.as_secs(),
            access,
        };
        let payload =
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).expect("claims serialise"));
        let mut mac = self.mac();
        mac.update(payload.as_bytes());
        let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{payload}.{sig}")
    }

    /// The grants of a valid, unexpired token for this service.
    pub fn verify(&self, token: &str) -> Option<Vec<Access>> {
        let (payload, sig) = token.split_once('.')?;
        let sig = URL_SAFE_NO_PAD.decode(sig).ok()?;
        let mut mac = self.mac();
        mac.update(payload.as_bytes());
        mac.verify_slice(&sig).ok()?;
        let claims: Claims = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
        (claims.aud == self.service && claims.exp > now()).then_some(claims.access)
    }

    /// What `user` (`None`: anonymous) gets of what it asked for.
    pub fn grant(&self, user: Option<&str>, requested: Vec<Access>) -> Vec<Access> {
        let authenticated = user.is_some() || self.users.is_none();
        requested
            .into_iter()
            .filter_map(|mut a| {
                a.actions.retain(|act| {
                    let known = matches!(act.as_str(), "pull" | "push" | "delete" | "*");
                    known
                        && (authenticated
                            || (self.anonymous_pull && act == "pull" && a.kind == "repository"))
                });
                (!a.actions.is_empty()).then_some(a)
            })
            .collect()
    }
}

/// How the registry authenticates requests.
#[derive(Debug, Default)]
pub enum AuthMode {
    /// Everyone may do everything.
    #[default]
    None,
    /// HTTP Basic against an htpasswd file.
    Basic(Htpasswd),
    /// Bearer tokens from the registry's own token endpoint.
    Token(TokenService),
}

/// Decodes `Authorization: Basic …` into user and password.
pub fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, b64) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(STANDARD.decode(b64.trim()).ok()?).ok()?;
    let (u, p) = decoded.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The 401 every auth failure answers with.
fn unauthorized(challenge: String) -> ApiError {
    let value = HeaderValue::from_str(&challenge)
        .unwrap_or_else(|_| HeaderValue::from_static("Basic realm=\"berth-registry\""));
    ApiError::new(ErrorCode::Unauthorized).header(header::WWW_AUTHENTICATE, value)
}

impl AuthMode {
    /// Checks a request that needs `required` (empty: any authenticated request). `realm`
    /// is the token endpoint to point clients at. Blocks (bcrypt) on a user's first request.
    pub fn authorize(
        &self,
        headers: &HeaderMap,
        required: &[Access],
        realm: &str,
    ) -> Result<Grant, ApiError> {
        match self {
            AuthMode::None => Ok(Grant::All),
            AuthMode::Basic(users) => match basic_credentials(headers) {
                Some((u, p)) if users.verify(&u, &p) => Ok(Grant::All),
                _ => Err(unauthorized("Basic realm=\"berth-registry\"".to_string())),
            },
            AuthMode::Token(svc) => {
                let granted = bearer_token(headers).and_then(|t| svc.verify(t));
                let mut challenge = format!(
                    "Bearer realm=\"{}\",service=\"{}\"",
                    svc.realm.as_deref().unwrap_or(realm),
                    svc.service
                );
                if !required.is_empty() {
                    let scopes: Vec<String> = required.iter().map(Access::scope).collect();
                    challenge.push_str(&format!(",scope=\"{}\"", scopes.join(" ")));
                }
                match granted {
                    Some(g) if Grant::Token(g.clone()).covers(required) => Ok(Grant::Token(g)),
                    Some(_) => Err(unauthorized(challenge + ",error=\"insufficient_scope\"")),
                    None => Err(unauthorized(challenge)),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn htpasswd_verifies_bcrypt_and_refuses_other_hashes() {
        let file = Htpasswd::parse(&format!(
            "# users\n{}\n\n",
            Htpasswd::line("alice", "s3cret")
        ))
        .unwrap();
        assert!(file.verify("alice", "s3cret"));
        assert!(file.verify("alice", "s3cret"), "cached path");
        assert!(!file.verify("alice", "wrong"));
        assert!(!file.verify("bob", "s3cret"));
        assert!(Htpasswd::parse("bob:{SHA}abc").is_err());
        assert!(Htpasswd::parse("nocolon").is_err());
    }

    #[test]
    fn scopes_parse_and_grants_cover() {
        let a = Access::parse_scope("repository:team/app:pull,push").unwrap();
        assert_eq!(a, Access::repository("team/app", &["pull", "push"]));
        assert_eq!(a.scope(), "repository:team/app:pull,push");
        assert!(Access::parse_scope("repository").is_none());
        let g = Grant::Token(vec![Access::repository("x", &["pull"])]);
        assert!(g.covers(&[Access::repository("x", &["pull"])]));
        assert!(!g.covers(&[Access::repository("x", &["pull", "push"])]));
        assert!(!g.covers(&[Access::repository("y", &["pull"])]));
        assert!(
            Grant::Token(vec![Access::repository("team/app", &["*"])])
                .covers(std::slice::from_ref(&a))
        );
    }

    #[test]
    fn tokens_sign_verify_and_expire() {
        let svc = TokenService::new(b"k1", "reg");
        let t = svc.issue("alice", vec![Access::repository("x", &["pull"])]);
        assert_eq!(svc.verify(&t).unwrap()[0].name, "x");
        assert!(TokenService::new(b"k2", "reg").verify(&t).is_none());
        assert!(TokenService::new(b"k1", "other").verify(&t).is_none());
        let (payload, sig) = t.split_once('.').unwrap();
        let forged = format!("{}x.{sig}", payload);
        assert!(svc.verify(&forged).is_none());
        let mut short = TokenService::new(b"k1", "reg");
        short.ttl = Duration::ZERO;
        assert!(short.verify(&short.issue("a", vec![])).is_none());
    }

    #[test]
    fn anonymous_grants_follow_the_policy() {
        let mut svc = TokenService::new(b"k", "reg");
        svc.users = Some(Htpasswd::default());
        let req = vec![Access::repository("x", &["pull", "push"])];
        assert!(svc.grant(None, req.clone()).is_empty());
        svc.anonymous_pull = true;
        assert_eq!(svc.grant(None, req.clone())[0].actions, vec!["pull"]);
        assert_eq!(
            svc.grant(Some("alice"), req.clone())[0].actions,
            vec!["pull", "push"]
        );
    }

    #[test]
    fn bearer_challenge_names_realm_service_and_scope() {
        let mode = AuthMode::Token(TokenService::new(b"k", "reg"));
        let err = mode
            .authorize(
                &HeaderMap::new(),
                &[Access::repository("a/b", &["pull", "push"])],
                "http://h/token",
            )
            .unwrap_err();
        let value = err.headers[0].1.to_str().unwrap().to_string();
        assert_eq!(
            value,
            "Bearer realm=\"http://h/token\",service=\"reg\",scope=\"repository:a/b:pull,push\""
        );
        let mut headers = HeaderMap::new();
        let t =
            TokenService::new(b"k", "reg").issue("u", vec![Access::repository("a/b", &["pull"])]);
        headers.insert(
            header::AUTHORIZATION,
            format!("Bearer {t}").parse().unwrap(),
        );
        assert!(
            mode.authorize(&headers, &[Access::repository("a/b", &["pull"])], "r")
                .is_ok()
        );
        let err = mode
            .authorize(&headers, &[Access::repository("a/b", &["push"])], "r")
            .unwrap_err();
        assert!(
            err.headers[0]
                .1
                .to_str()
                .unwrap()
                .ends_with("error=\"insufficient_scope\"")
        );
    }
}
