//! Registry credentials: `X-Registry-Auth` from `~/.docker/config.json` `auths`, and
//! `login`/`logout` (which check credentials through `POST /auth` and store them there).

use std::io::{BufRead, Write};
use std::path::PathBuf;

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use clap::Args;
use serde::{Deserialize, Serialize};

use super::{Ctx, print_out};
use crate::reference::registry_auth_key;

/// Docker Hub's key in `auths`.
const DOCKER_HUB: &str = "https://index.docker.io/v1/";

/// `berth login`
#[derive(Args, Debug)]
pub struct LoginArgs {
    /// Password or Personal Access Token (PAT)
    #[arg(short = 'p', long, value_name = "string")]
    password: Option<String>,
    /// Take the Password or Personal Access Token (PAT) from stdin
    #[arg(long = "password-stdin")]
    password_stdin: bool,
    /// Username
    #[arg(short = 'u', long, value_name = "string")]
    username: Option<String>,
    /// [SERVER]
    #[arg(value_name = "SERVER")]
    server: Option<String>,
}

/// `berth logout`
#[derive(Args, Debug)]
pub struct LogoutArgs {
    /// [SERVER]
    #[arg(value_name = "SERVER")]
    server: Option<String>,
}

/// The credentials sent to the daemon (moby's `registry.AuthConfig`).
#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq)]
pub struct AuthConfig {
    /// Account name.
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub username: String,
    /// Password or token.
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub password: String,
    /// Registry address (the `auths` key).
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub serveraddress: String,
    /// OAuth identity token.
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub identitytoken: String,
}

fn config_file(ctx: &Ctx) -> PathBuf {
    ctx.docker_config.join("config.json")
}

fn read_config(ctx: &Ctx) -> Result<serde_json::Value> {
    match std::fs::read(config_file(ctx)) {
        Ok(data) if !data.iter().all(u8::is_ascii_whitespace) => serde_json::from_slice(&data)
            .with_context(|| format!("loading config file {}", config_file(ctx).display())),
        Ok(_) => Ok(serde_json::json!({})),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(serde_json::json!({})),
        Err(e) => Err(anyhow!(
            "loading config file {}: {e}",
            config_file(ctx).display()
        )),
    }
}

fn write_config(ctx: &Ctx, value: &serde_json::Value) -> Result<()> {
    let path = config_file(ctx);
    std::fs::create_dir_all(&ctx.docker_config)
        .with_context(|| format!("creating {}", ctx.docker_config.display()))?;
    let mut buf = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"\t");
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
    value.serialize(&mut ser)?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, &buf).with_context(|| format!("writing {}", tmp.display()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))
}

/// The stored credentials for a registry key, if any.
pub fn stored_auth(ctx: &Ctx, key: &str) -> Option<AuthConfig> {
    let cfg = read_config(ctx).ok()?;
    let entry = cfg.get("auths")?.get(key)?;
    let mut auth = AuthConfig {
        serveraddress: key.to_string(),
        ..Default::default()
    };
    if let Some(encoded) = entry
        .get("auth")
        .and_then(|v| v.as_str())
        .filter(|s| !s.is_empty())
    {
        let decoded = STANDARD.decode(encoded).ok()?;
        let text = String::from_utf8(decoded).ok()?;
        let (user, pass) = text.split_once(':')?;
        auth.username = user.to_string();
        auth.password = pass.to_string();
    }
    if let Some(tok) = entry.get("identitytoken").and_then(|v| v.as_str()) {
        auth.identitytoken = tok.to_string();
    }
    Some(auth)
}

/// The `X-Registry-Auth` value for a registry key: base64url JSON, `e30=` (`{}`) without
/// stored credentials.
pub fn encoded_auth(ctx: &Ctx, key: &str) -> String {
    match stored_auth(ctx, key) {
        Some(a) => encode(&a),
        None => "e30=".to_string(),
    }
}

/// base64url of the JSON form.
pub fn encode(auth: &AuthConfig) -> String {
    URL_SAFE.encode(serde_json::to_vec(auth).unwrap_or_else(|_| b"{}".to_vec()))
}

fn normalize_server(server: Option<&str>) -> String {
    match server {
        None | Some("") => DOCKER_HUB.to_string(),
        Some(s) => {
            let host = s
                .trim_start_matches("https://")
                .trim_start_matches("http://");
            let host = host.split('/').next().unwrap_or(host);
            registry_auth_key(host)
        }
    }
}

fn prompt(label: &str) -> Result<String> {
    eprint!("{label}");
    std::io::stderr().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

fn prompt_hidden(label: &str) -> Result<String> {
    use nix::sys::termios::{self, LocalFlags, SetArg};
    use std::os::fd::AsFd;
    let stdin = std::io::stdin();
    let saved = termios::tcgetattr(stdin.as_fd()).ok();
    if let Some(orig) = &saved {
        let mut quiet = orig.clone();
        quiet.local_flags.remove(LocalFlags::ECHO);
        let _ = termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &quiet);
    }
    let text = prompt(label);
    if let Some(orig) = &saved {
        let _ = termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, orig);
    }
    eprintln!();
    text
}

#[derive(Deserialize, Default)]
struct AuthReply {
    #[serde(rename = "Status", default)]
    status: String,
    #[serde(rename = "IdentityToken", default)]
    identity_token: String,
}

/// `berth login`.
pub async fn login(ctx: &Ctx, a: LoginArgs) -> Result<()> {
    if a.password.is_some() && a.password_stdin {
        bail!("--password and --password-stdin are mutually exclusive");
    }
    let server = normalize_server(a.server.as_deref());
    let username = match &a.username {
        Some(u) => u.clone(),
        None => prompt("Username: ")?,
    };
    if username.trim().is_empty() {
        bail!("Error: Non-null Username Required");
    }
    let password = if a.password_stdin {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)?;
        text.trim_end_matches(['\n', '\r']).to_string()
    } else if let Some(p) = &a.password {
        eprintln!("WARNING! Using --password via the CLI is insecure. Use --password-stdin.");
        p.clone()
    } else {
        prompt_hidden("Password: ")?
    };
    if password.is_empty() {
        bail!("Error: Password Required");
    }
    let auth = AuthConfig {
        username: username.clone(),
        password: password.clone(),
        serveraddress: server.clone(),
        ..Default::default()
    };
    let reply = ctx.client.post_json("/auth", &auth).await?;
    let reply: AuthReply = serde_json::from_slice(&reply).unwrap_or_default();
    let mut cfg = read_config(ctx)?;
    let obj = cfg
        .as_object_mut()
        .ok_or_else(|| anyhow!("config file is not a JSON object"))?;
    let auths = obj.entry("auths").or_insert_with(|| serde_json::json!({}));
    let mut entry = serde_json::json!({"auth": STANDARD.encode(format!("{username}:{password}"))});
    if !reply.identity_token.is_empty() {
        entry = serde_json::json!({"identitytoken": reply.identity_token});
    }
    if let Some(map) = auths.as_object_mut() {
        map.insert(server, entry);
    }
    write_config(ctx, &cfg)?;
    let status = if reply.status.is_empty() {
        "Login Succeeded".to_string()
    } else {
        reply.status
    };
    print_out(format!("{status}\n").as_bytes())
}

/// `berth logout`: always reports the removal, erasing every spelling of the server.
pub async fn logout(ctx: &Ctx, a: LogoutArgs) -> Result<()> {
    let (host, keys) = match a.server.as_deref() {
        None | Some("") => (DOCKER_HUB.to_string(), vec![DOCKER_HUB.to_string()]),
        Some(server) => {
            let host = server
                .trim_start_matches("https://")
                .trim_start_matches("http://");
            let host = host.split('/').next().unwrap_or(host).to_string();
            let keys = vec![
                server.to_string(),
                host.clone(),
                format!("http://{host}"),
                format!("https://{host}"),
            ];
            (host, keys)
        }
    };
    print_out(format!("Removing login credentials for {host}\n").as_bytes())?;
    let mut cfg = read_config(ctx)?;
    if let Some(auths) = cfg.get_mut("auths").and_then(|v| v.as_object_mut()) {
        for k in &keys {
            auths.remove(k);
        }
    }
    if let Err(e) = write_config(ctx, &cfg) {
        eprintln!("WARNING: could not erase credentials:\n{host}: {e:#}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn ctx_with(config: &str) -> (tempfile::TempDir, Ctx) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), config).unwrap();
        let client = crate::client::Client::new("unix:///nonexistent.sock", None).unwrap();
        let ctx = Ctx {
            client: Arc::clone(&client),
            docker_config: dir.path().to_path_buf(),
            debug: false,
        };
        (dir, ctx)
    }

    #[test]
    fn auth_header_from_config() {
        let auth = STANDARD.encode("me:secret");
        let (_d, ctx) = ctx_with(&format!(
            r#"{{"auths":{{"localhost:5000":{{"auth":"{auth}"}}}}}}"#
        ));
        let header = encoded_auth(&ctx, "localhost:5000");
        let decoded: serde_json::Value =
            serde_json::from_slice(&URL_SAFE.decode(header).unwrap()).unwrap();
        assert_eq!(
            decoded,
            serde_json::json!({"username":"me","password":"secret","serveraddress":"localhost:5000"})
        );
        assert_eq!(encoded_auth(&ctx, DOCKER_HUB), "e30=");
    }

    #[test]
    fn servers_normalise() {
        assert_eq!(normalize_server(None), DOCKER_HUB);
        assert_eq!(normalize_server(Some("docker.io")), DOCKER_HUB);
        assert_eq!(
            normalize_server(Some("https://localhost:5000/v2/")),
            "localhost:5000"
        );
    }

    #[test]
    fn config_round_trip_keeps_other_keys() {
        let (_d, ctx) = ctx_with(r#"{"psFormat":"x","auths":{}}"#);
        let mut cfg = read_config(&ctx).unwrap();
        cfg["auths"]["r:1"] = serde_json::json!({"auth": "eDp5"});
        write_config(&ctx, &cfg).unwrap();
        let back = read_config(&ctx).unwrap();
        assert_eq!(back["psFormat"], "x");
        assert_eq!(stored_auth(&ctx, "r:1").unwrap().username, "x");
    }
}
