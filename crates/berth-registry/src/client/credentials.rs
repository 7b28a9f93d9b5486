//! Registry credentials as the docker CLI keeps them: `~/.docker/config.json` (`auths` with
//! base64 `user:password`, `credsStore`, `credHelpers`) and `docker-credential-<name>`
//! helper programs.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;

/// The key Docker Hub credentials are stored under.
pub const DOCKER_HUB_AUTH_KEY: &str = "https://index.docker.io/v1/";

/// A user name and password, or an identity (refresh) token.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name (empty with an identity token).
    pub username: String,
    /// The password.
    pub password: String,
    /// An OAuth refresh token, used instead of the password at token endpoints.
    pub identity_token: Option<String>,
}

impl Credentials {
    /// User name and password.
    pub fn basic(username: &str, password: &str) -> Credentials {
        Credentials {
            username: username.to_string(),
            password: password.to_string(),
            identity_token: None,
        }
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field(
                "identity_token",
                &self.identity_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// Why credentials could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// The config file exists but could not be read or parsed.
    #[error("docker config {path}: {reason}")]
    Config {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A credential helper failed.
    #[error("credential helper docker-credential-{helper} for {registry}: {reason}")]
    Helper {
        /// The helper's name (after `docker-credential-`).
        helper: String,
        /// The registry asked about.
        registry: String,
        /// What went wrong.
        reason: String,
    },
}

#[derive(Debug, Default, Deserialize)]
struct ConfigFile {
    #[serde(default)]
    auths: HashMap<String, AuthEntry>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: HashMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default, rename = "identitytoken")]
    identity_token: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct HelperAnswer {
    username: String,
    secret: String,
}

/// Where credentials for each registry come from.
#[derive(Debug, Clone, Default)]
pub struct CredentialStore {
    overrides: HashMap<String, Credentials>,
    auths: HashMap<String, Credentials>,
    creds_store: Option<String>,
    cred_helpers: HashMap<String, String>,
    helper_path: Option<OsString>,
}

/// Normalises a config key or registry name to a host: scheme and path dropped,
/// Docker Hub's aliases folded into `docker.io`.
pub fn registry_key(s: &str) -> String {
    let s = s.trim();
    let s = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .unwrap_or(s);
    let host = s.split('/').next().unwrap_or(s);
    match host {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            "docker.io".to_string()
        }
        h => h.to_string(),
    }
}

impl CredentialStore {
    /// No credentials at all.
    pub fn empty() -> CredentialStore {
        CredentialStore::default()
    }

    /// Reads a docker `config.json`; a missing file gives an empty store.
    pub fn load(path: &Path) -> Result<CredentialStore, CredentialError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(CredentialStore::empty());
            }
            Err(e) => {
                return Err(CredentialError::Config {
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                });
            }
        };
        let config: ConfigFile =
            serde_json::from_str(&text).map_err(|e| CredentialError::Config {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?;
        let mut auths = HashMap::new();
        for (key, entry) in config.auths {
            let bad = |reason: &str| CredentialError::Config {
                path: path.to_path_buf(),
                reason: format!("auths entry {key:?}: {reason}"),
            };
            let (username, password) = match (&entry.auth, entry.username, entry.password) {
                (Some(b64), _, _) if !b64.is_empty() => {
                    let raw = STANDARD
                        .decode(b64.trim())
                        .map_err(|_| bad("auth is not base64"))?;
                    let raw = String::from_utf8(raw).map_err(|_| bad("auth is not UTF-8"))?;
                    let (u, p) = raw
                        .split_once(':')
                        .ok_or_else(|| bad("auth is not user:password"))?;
                    (u.to_string(), p.to_string())
                }
                (_, Some(u), Some(p)) => (u, p),
                _ if entry.identity_token.is_some() => (String::new(), String::new()),
                // An empty entry means "use the credential store" (docker writes these).
                _ => continue,
            };
            auths.insert(
                registry_key(&key),
                Credentials {
                    username,
                    password,
                    identity_token: entry.identity_token.filter(|t| !t.is_empty()),
                },
            );
        }
        Ok(CredentialStore {
            overrides: HashMap::new(),
            auths,
            creds_store: config.creds_store.filter(|s| !s.is_empty()),
            cred_helpers: config
                .cred_helpers
                .into_iter()
                .map(|(k, v)| (registry_key(&k), v))
                .collect(),
            helper_path: None,
        })
    }

    /// Reads `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
    pub fn load_default() -> Result<CredentialStore, CredentialError> {
        let dir = match std::env::var_os("DOCKER_CONFIG") {
            Some(d) => PathBuf::from(d),
            None => match std::env::var_os("HOME") {
                Some(h) => PathBuf::from(h).join(".docker"),
                None => return Ok(CredentialStore::empty()),
            },
        };
        CredentialStore::load(&dir.join("config.json"))
    }

    /// Sets credentials for a registry, overriding the file and helpers.
    pub fn insert(&mut self, registry: &str, credentials: Credentials) {
        self.overrides.insert(registry_key(registry), credentials);
    }

    /// Looks helper programs up in `path` (a `PATH`-style list) instead of `$PATH`.
    pub fn with_helper_path(mut self, path: impl Into<OsString>) -> CredentialStore {
        self.helper_path = Some(path.into());
        self
    }

    /// The credentials for `registry` (a reference domain such as `docker.io` or
    /// `localhost:5000`): [`CredentialStore::insert`]ed ones first, then a `credHelpers`
    /// entry, then `auths`, then `credsStore`.
    /// Runs a helper program, so it blocks.
    pub fn get(&self, registry: &str) -> Result<Option<Credentials>, CredentialError> {
        let key = registry_key(registry);
        if let Some(c) = self.overrides.get(&key) {
            return Ok(Some(c.clone()));
        }
        if let Some(helper) = self.cred_helpers.get(&key) {
            return self.run_helper(helper, &key);
        }
        if let Some(c) = self.auths.get(&key) {
            return Ok(Some(c.clone()));
        }
        match &self.creds_store {
            Some(helper) => self.run_helper(helper, &key),
            None => Ok(None),
        }
    }

    fn run_helper(&self, helper: &str, key: &str) -> Result<Option<Credentials>, CredentialError> {
        let server_url = if key == "docker.io" {
            DOCKER_HUB_AUTH_KEY
        } else {
            key
        };
        let err = |reason: String| CredentialError::Helper {
            helper: helper.to_string(),
            registry: key.to_string(),
            reason,
        };
        let program = format!("docker-credential-{helper}");
        let mut cmd = Command::new(&program);
        if let Some(path) = &self.helper_path {
            let found = std::env::split_paths(path)
                .map(|d| d.join(&program))
                .find(|p| p.is_file())
                .ok_or_else(|| err("not found".to_string()))?;
            cmd = Command::new(found);
        }
        let mut child = cmd
            .arg("get")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| err(e.to_string()))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(server_url.as_bytes())
                .map_err(|e| err(format!("write stdin: {e}")))?;
        }
        let out = child.wait_with_output().map_err(|e| err(e.to_string()))?;
        if !out.status.success() {
            let msg = String::from_utf8_lossy(&out.stdout).trim().to_string();
            // The helper protocol's "nothing stored" answer.
            if msg.contains("credentials not found") {
                return Ok(None);
            }
            let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
            return Err(err(format!("{} {msg}{stderr}", out.status)));
        }
        let answer: HelperAnswer =
            serde_json::from_slice(&out.stdout).map_err(|e| err(format!("bad answer: {e}")))?;
        Ok(Some(if answer.username == "<token>" {
            Credentials {
                username: String::new(),
                password: String::new(),
                identity_token: Some(answer.secret),
            }
        } else {
            Credentials::basic(&answer.username, &answer.secret)
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn reads_auths_and_normalises_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        let auth = STANDARD.encode("alice:pa:ss");
        std::fs::write(
            &path,
            format!(
                r#"{{"auths":{{"https://index.docker.io/v1/":{{"auth":"{auth}"}},"localhost:5000":{{"auth":"{}"}},"ghcr.io":{{}}}}}}"#,
                STANDARD.encode("bob:pw")
            ),
        )
        .unwrap();
        let store = CredentialStore::load(&path).unwrap();
        assert_eq!(
            store.get("docker.io").unwrap(),
            Some(Credentials::basic("alice", "pa:ss"))
        );
        assert_eq!(
            store.get("http://localhost:5000/v2/").unwrap(),
            Some(Credentials::basic("bob", "pw"))
        );
        assert_eq!(store.get("ghcr.io").unwrap(), None);
        assert!(
            CredentialStore::load(&dir.path().join("missing.json"))
                .unwrap()
                .get("docker.io")
                .unwrap()
                .is_none()
        );
        std::fs::write(&path, r#"{"auths":{"x":{"auth":"!!"}}}"#).unwrap();
        assert!(
            CredentialStore::load(&path)
                .unwrap_err()
                .to_string()
                .contains("not base64")
        );
    }

    #[test]
    fn runs_credential_helpers() {
        let dir = tempfile::tempdir().unwrap();
        let helper = dir.path().join("docker-credential-fake");
        std::fs::write(
            &helper,
            "#!/bin/sh\nread url\ncase \"$url\" in\n  reg.example:5000) echo '{\"ServerURL\":\"reg.example:5000\",\"Username\":\"carol\",\"Secret\":\"s\"}';;\n  https://index.docker.io/v1/) echo '{\"ServerURL\":\"x\",\"Username\":\"<token>\",\"Secret\":\"refresh\"}';;\n  *) echo 'credentials not found in native keychain'; exit 1;;\nesac\n",
        )
        .unwrap();
        std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(
            &path,
            r#"{"credsStore":"fake","credHelpers":{"other.example":"missing"}}"#,
        )
        .unwrap();
        let store = CredentialStore::load(&path)
            .unwrap()
            .with_helper_path(dir.path());
        assert_eq!(
            store.get("reg.example:5000").unwrap(),
            Some(Credentials::basic("carol", "s"))
        );
        assert_eq!(
            store
                .get("docker.io")
                .unwrap()
                .unwrap()
                .identity_token
                .as_deref(),
            Some("refresh")
        );
        assert_eq!(store.get("nothing.example").unwrap(), None);
        let err = store.get("other.example").unwrap_err().to_string();
        assert!(err.contains("docker-credential-missing"), "{err}");
        let mut store = store;
        store.insert("reg.example:5000", Credentials::basic("dave", "d"));
        assert_eq!(
            store.get("reg.example:5000").unwrap().unwrap().username,
            "dave"
        );
    }
}
