//! Registry credentials as the API carries them: the `X-Registry-Auth` header (pull, push)
//! and the `POST /auth` body.

use base64::Engine;
use serde::{Deserialize, Serialize};

/// Docker's `AuthConfig`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthConfig {
    /// User name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub username: String,
    /// Password or token.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub password: String,
    /// The registry, e.g. `https://index.docker.io/v1/` or `localhost:5000`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub serveraddress: String,
    /// An OAuth refresh token used instead of the password.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub identitytoken: String,
}

/// Base64 as moby reads these headers: URL-safe or standard, padded or not.
fn decode_lenient(value: &str) -> Option<Vec<u8>> {
    let engines = [
        base64::engine::general_purpose::URL_SAFE,
        base64::engine::general_purpose::URL_SAFE_NO_PAD,
        base64::engine::general_purpose::STANDARD,
        base64::engine::general_purpose::STANDARD_NO_PAD,
    ];
    engines.iter().find_map(|e| e.decode(value.trim()).ok())
}

impl AuthConfig {
    /// Decodes an `X-Registry-Auth` value leniently like moby: URL-safe or standard base64,
    /// padded or not; anything undecodable means anonymous.
    pub fn from_header(value: &str) -> Option<AuthConfig> {
        let bytes = decode_lenient(value)?;
        let auth: AuthConfig = serde_json::from_slice(&bytes).ok()?;
        (!auth.username.is_empty() || !auth.identitytoken.is_empty()).then_some(auth)
    }

    /// Decodes an `X-Registry-Config` value (`POST /build`): a map from registry to
    /// credentials, each carrying its key as the server address when it names none.
    pub fn from_config_header(value: &str) -> Vec<AuthConfig> {
        let Some(bytes) = decode_lenient(value) else {
            return Vec::new();
        };
        let map: std::collections::BTreeMap<String, AuthConfig> =
            serde_json::from_slice(&bytes).unwrap_or_default();
        map.into_iter()
            .filter(|(_, a)| !a.username.is_empty() || !a.identitytoken.is_empty())
            .map(|(registry, mut auth)| {
                if auth.serveraddress.is_empty() {
                    auth.serveraddress = registry;
                }
                auth
            })
            .collect()
    }

    /// Encodes for the `X-Registry-Auth` header (URL-safe base64 of the JSON).
    pub fn to_header(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        base64::engine::general_purpose::URL_SAFE.encode(json)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_config_maps_registries_to_credentials() {
        let json = r#"{"localhost:5000":{"username":"u","password":"p"},"other":{}}"#;
        let header = base64::engine::general_purpose::URL_SAFE.encode(json);
        let auths = AuthConfig::from_config_header(&header);
        assert_eq!(auths.len(), 1, "entries without credentials are dropped");
        assert_eq!(auths[0].serveraddress, "localhost:5000");
        assert_eq!(auths[0].password, "p");
        assert!(AuthConfig::from_config_header("e30=").is_empty());
        assert!(AuthConfig::from_config_header("not base64!").is_empty());
    }

    #[test]
    fn headers_decode_leniently() {
        let auth = AuthConfig {
            username: "u".into(),
            password: "p".into(),
            serveraddress: "localhost:5000".into(),
            ..Default::default()
        };
        assert_eq!(
            AuthConfig::from_header(&auth.to_header()),
            Some(auth.clone())
        );
        let std = base64::engine::general_purpose::STANDARD_NO_PAD
            .encode(serde_json::to_vec(&auth).unwrap());
        assert_eq!(AuthConfig::from_header(&std), Some(auth));
        assert_eq!(AuthConfig::from_header("e30="), None, "{{}} is anonymous");
        assert_eq!(AuthConfig::from_header("%%%"), None);
    }
}
