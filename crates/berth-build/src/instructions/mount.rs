//! `RUN --mount=type=...,target=...` specifications.

use serde::Serialize;

/// The kind of a RUN mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MountKind {
    /// A read-only (by default) view of the context or of another stage.
    Bind,
    /// A persistent cache directory kept across builds.
    Cache,
    /// A secret file (or environment variable) never written to a layer.
    Secret,
    /// An empty tmpfs.
    Tmpfs,
    /// An SSH agent socket.
    Ssh,
}

impl MountKind {
    fn name(self) -> &'static str {
        match self {
            MountKind::Bind => "bind",
            MountKind::Cache => "cache",
            MountKind::Secret => "secret",
            MountKind::Tmpfs => "tmpfs",
            MountKind::Ssh => "ssh",
        }
    }
}

/// How concurrent builds share one cache mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheSharing {
    /// Several writers at once.
    Shared,
    /// A private copy when the cache is in use.
    Private,
    /// One writer at a time; others wait.
    Locked,
}

/// One `--mount` of a RUN instruction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunMount {
    /// The mount type (`type=`, default bind).
    pub kind: MountKind,
    /// Where it appears in the container (`target=`, `dst=`, `destination=`).
    pub target: Option<String>,
    /// Path inside `from` (or the context) for bind and cache, secret file name for secrets.
    pub source: Option<String>,
    /// Stage name, image or context the source comes from.
    pub from: Option<String>,
    /// Cache or secret id.
    pub id: Option<String>,
    /// Cache sharing mode (`sharing=`), only for cache mounts.
    pub sharing: Option<CacheSharing>,
    /// Whether the mount is read-only (bind and secret default to read-only).
    pub read_only: bool,
    /// Permission bits for cache, secret and ssh mounts (octal in the Dockerfile).
    pub mode: Option<u32>,
    /// Owner uid for cache, secret and ssh mounts.
    pub uid: Option<u32>,
    /// Owner gid for cache, secret and ssh mounts.
    pub gid: Option<u32>,
    /// Whether a missing secret or ssh agent fails the step.
    pub required: bool,
    /// Size limit in bytes for tmpfs.
    pub size: Option<u64>,
    /// For secrets: expose the secret as this environment variable.
    pub env: Option<String>,
}

/// Splits a comma-separated list where fields may be double-quoted (`"a,b"`, `""` for a quote).
fn csv_fields(spec: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut chars = spec.chars().peekable();
    let mut in_quotes = false;
    while let Some(c) = chars.next() {
        match c {
            '"' if in_quotes && chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            '"' => in_quotes = !in_quotes,
            ',' if !in_quotes => fields.push(std::mem::take(&mut field)),
            _ => field.push(c),
        }
    }
    if in_quotes {
        return Err(format!("unterminated quote in mount {spec:?}"));
    }
    fields.push(field);
    Ok(fields)
}

fn parse_bool(key: &str, value: &str) -> Result<bool, String> {
    match value.to_ascii_lowercase().as_str() {
        "1" | "t" | "true" => Ok(true),
        "0" | "f" | "false" => Ok(false),
        _ => Err(format!(
            "invalid value for {key}: {value:?} (use true or false)"
        )),
    }
}

fn parse_u32(key: &str, value: &str, radix: u32) -> Result<u32, String> {
    u32::from_str_radix(value, radix).map_err(|_| {
        let what = if radix == 8 {
            "an octal number like 0755"
        } else {
            "a number"
        };
        format!("invalid value {value:?} for {key}: use {what}")
    })
}

/// Parses sizes like `64m`, `1g`, `512k` or a byte count.
fn parse_size(value: &str) -> Result<u64, String> {
    let lower = value.trim().to_ascii_lowercase();
    let lower = lower.strip_suffix('b').unwrap_or(&lower);
    let (digits, factor) = match lower.chars().last() {
        Some('k') => (&lower[..lower.len() - 1], 1u64 << 10),
        Some('m') => (&lower[..lower.len() - 1], 1 << 20),
        Some('g') => (&lower[..lower.len() - 1], 1 << 30),
        Some('t') => (&lower[..lower.len() - 1], 1 << 40),
        _ => (lower, 1),
    };
    let number: f64 = digits
        .parse()
        .map_err(|_| format!("invalid value {value:?} for size: use e.g. 64m"))?;
    Ok((number * factor as f64) as u64)
}

impl RunMount {
    /// Parses one `--mount` value; `expand` is applied to every value first.
    ///
    /// When `deferred` is true (parse time, before variables are known),
    /// values that still contain `$` are accepted without checking them.
    pub(crate) fn parse(
        spec: &str,
        expand: &dyn Fn(&str) -> Result<String, String>,
        deferred: bool,
    ) -> Result<RunMount, String> {
        let mut m = RunMount {
            kind: MountKind::Bind,
            target: None,
            source: None,
            from: None,
            id: None,
            sharing: None,
            read_only: false,
            mode: None,
            uid: None,
            gid: None,
            required: false,
            size: None,
            env: None,
        };
        let mut read_only: Option<bool> = None;
        for field in csv_fields(spec)? {
            let (key, value) = match field.split_once('=') {
                Some((k, v)) => (k.to_ascii_lowercase(), Some(v)),
                None => (field.to_ascii_lowercase(), None),
            };
            let Some(value) = value else {
                match key.as_str() {
                    "readonly" | "ro" => read_only = Some(true),
                    "readwrite" | "rw" => read_only = Some(false),
                    "required" if matches!(m.kind, MountKind::Secret | MountKind::Ssh) => {
                        m.required = true
                    }
                    "required" => {
                        return Err(format!(
                            "required is not allowed for type={} mounts",
                            m.kind.name()
                        ));
                    }
                    _ => {
                        return Err(format!(
                            "invalid field {field:?}: it must be a key=value pair"
                        ));
                    }
                }
                continue;
            };
            if deferred && value.contains('$') {
                match key.as_str() {
                    "target" | "dst" | "destination" => m.target = Some(value.to_string()),
                    "source" | "src" => m.source = Some(value.to_string()),
                    "from" => m.from = Some(value.to_string()),
                    "id" => m.id = Some(value.to_string()),
                    "env" => m.env = Some(value.to_string()),
                    _ => {}
                }
                continue;
            }
            let value = expand(value)?;
            match key.as_str() {
                "type" => {
                    m.kind = match value.to_ascii_lowercase().as_str() {
                        "bind" => MountKind::Bind,
                        "cache" => MountKind::Cache,
                        "secret" => MountKind::Secret,
                        "tmpfs" => MountKind::Tmpfs,
                        "ssh" => MountKind::Ssh,
                        _ => {
                            return Err(format!(
                                "unsupported mount type {value:?}: use bind, cache, secret, tmpfs or ssh"
                            ));
                        }
                    }
                }
                "from" => m.from = Some(value),
                "source" | "src" => m.source = Some(value),
                "target" | "dst" | "destination" => m.target = Some(value),
                "readonly" | "ro" => read_only = Some(parse_bool(&key, &value)?),
                "readwrite" | "rw" => read_only = Some(!parse_bool(&key, &value)?),
                "required" if matches!(m.kind, MountKind::Secret | MountKind::Ssh) => {
                    m.required = parse_bool(&key, &value)?
                }
                "size" if m.kind == MountKind::Tmpfs => m.size = Some(parse_size(&value)?),
                "required" | "size" => {
                    return Err(format!(
                        "{key} is not allowed for type={} mounts",
                        m.kind.name()
                    ));
                }
                "id" => m.id = Some(value),
                "sharing" => {
                    m.sharing = Some(match value.to_ascii_lowercase().as_str() {
                        "shared" => CacheSharing::Shared,
                        "private" => CacheSharing::Private,
                        "locked" => CacheSharing::Locked,
                        _ => {
                            return Err(format!(
                                "unsupported sharing value {value:?}: use shared, private or locked"
                            ));
                        }
                    })
                }
                "mode" => m.mode = Some(parse_u32(&key, &value, 8)?),
                "uid" => m.uid = Some(parse_u32(&key, &value, 10)?),
                "gid" => m.gid = Some(parse_u32(&key, &value, 10)?),
                "env" => m.env = Some(value),
                _ => {
                    return Err(format!(
                        "unexpected key {key:?} in {field:?}: use type, target, source, from, id, sharing, mode, uid, gid, readonly, required, size or env"
                    ));
                }
            }
        }
        m.validate(read_only)?;
        Ok(m)
    }

    fn validate(&mut self, read_only: Option<bool>) -> Result<(), String> {
        let kind = self.kind.name();
        let file_info_allowed = matches!(
            self.kind,
            MountKind::Secret | MountKind::Ssh | MountKind::Cache
        );
        if !file_info_allowed && (self.mode.is_some() || self.uid.is_some() || self.gid.is_some()) {
            return Err(format!(
                "mode, uid and gid are not allowed for type={kind} mounts"
            ));
        }
        self.read_only =
            read_only.unwrap_or(!matches!(self.kind, MountKind::Cache | MountKind::Tmpfs));
        if self.sharing.is_some() && self.kind != MountKind::Cache {
            return Err(format!(
                "sharing is only allowed for type=cache mounts, not type={kind}"
            ));
        }
        match self.kind {
            MountKind::Secret => {
                if self.from.is_some() {
                    return Err("a secret mount takes no from=: remove it".into());
                }
                if self.source.is_none()
                    && self.target.is_none()
                    && self.id.is_none()
                    && self.env.is_none()
                {
                    return Err("a secret mount needs id=<secret id> (or target= or env=)".into());
                }
                if self.source.is_some() && self.id.is_some() {
                    return Err("a secret mount takes source= or id=, not both".into());
                }
            }
            MountKind::Ssh => {}
            MountKind::Bind | MountKind::Cache | MountKind::Tmpfs => {
                if self.target.as_deref().is_none_or(str::is_empty) {
                    return Err(format!(
                        "a type={kind} mount needs target=<path in the container>"
                    ));
                }
            }
        }
        if self.kind == MountKind::Cache && self.sharing.is_none() {
            self.sharing = Some(CacheSharing::Shared);
        }
        Ok(())
    }

    /// The id a cache or secret mount is keyed by: `id=`, else the target (cache) or the
    /// base name of the target/source (secret), as BuildKit does.
    pub fn effective_id(&self) -> Option<String> {
        if let Some(id) = &self.id {
            return Some(id.clone());
        }
        match self.kind {
            MountKind::Cache => self.target.clone(),
            MountKind::Secret => self
                .source
                .as_deref()
                .or(self.target.as_deref())
                .map(|p| p.rsplit('/').next().unwrap_or(p).to_string()),
            _ => None,
        }
    }

    /// Where a secret mount appears: `target=`, else `/run/secrets/<id>`
    /// (`None` for a secret exposed only through `env=`).
    pub fn secret_target(&self) -> Option<String> {
        if self.kind != MountKind::Secret {
            return None;
        }
        if let Some(target) = &self.target {
            return Some(target.clone());
        }
        if self.env.is_some() {
            return None;
        }
        self.effective_id().map(|id| format!("/run/secrets/{id}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(spec: &str) -> Result<RunMount, String> {
        RunMount::parse(spec, &|v| Ok(v.to_string()), false)
    }

    #[test]
    fn cache_mount_defaults() {
        let m = parse("type=cache,target=/root/.cache/go-build,id=go,mode=0755,uid=1000").unwrap();
        assert_eq!(m.kind, MountKind::Cache);
        assert_eq!(m.sharing, Some(CacheSharing::Shared));
        assert_eq!(m.mode, Some(0o755));
        assert_eq!(m.uid, Some(1000));
        assert!(!m.read_only);
    }

    #[test]
    fn bind_defaults_read_only_and_secret_target() {
        let m = parse("target=/src,from=build,source=/out,rw").unwrap();
        assert_eq!(m.kind, MountKind::Bind);
        assert!(!m.read_only);
        assert!(parse("type=bind,target=/src").unwrap().read_only);
        let s = parse("type=secret,id=npmrc,required").unwrap();
        assert_eq!(s.secret_target().as_deref(), Some("/run/secrets/npmrc"));
        assert!(s.required);
    }

    #[test]
    fn rejects_invalid_mounts() {
        assert!(
            parse("type=volume,target=/x")
                .unwrap_err()
                .contains("unsupported mount type")
        );
        assert!(parse("type=cache,target=/x,sharing=maybe").is_err());
        assert!(parse("type=bind,target=/x,mode=0700").is_err());
        assert!(parse("type=cache").unwrap_err().contains("needs target"));
        assert!(parse("type=secret,id=a,from=b").is_err());
        assert!(parse("type=tmpfs,target=/t,size=64m").unwrap().size == Some(64 << 20));
        assert!(
            parse("type=cache,target=/x,bogus=1")
                .unwrap_err()
                .contains("unexpected key")
        );
        assert!(parse("type=bind,target=/x,required").is_err());
    }

    #[test]
    fn deferred_values_pass_until_expanded() {
        let m = RunMount::parse(
            "type=cache,target=$DIR,id=${ID}",
            &|v| Ok(v.to_string()),
            true,
        )
        .unwrap();
        assert_eq!(m.target.as_deref(), Some("$DIR"));
    }
}
