//! Image references normalised as `distribution/reference` does (`busybox` →
//! `docker.io/library/busybox`) and printed back in familiar form.

use anyhow::{Result, anyhow};

/// The default registry domain.
pub const DEFAULT_DOMAIN: &str = "docker.io";

/// A parsed, normalised image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// Registry host (with port), `docker.io` by default.
    pub domain: String,
    /// Repository path; `library/` is prepended for official images on docker.io.
    pub path: String,
    /// Tag, if given.
    pub tag: Option<String>,
    /// Digest (`sha256:…`), if given.
    pub digest: Option<String>,
}

fn valid_component(c: &str) -> bool {
    if c.is_empty() {
        return false;
    }
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        // separators: one '.', one or two '_', or any run of '-'
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn valid_tag(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 128
        && t.as_bytes()[0] != b'.'
        && t.as_bytes()[0] != b'-'
        && t.bytes()
            .all(|x| x.is_ascii_alphanumeric() || matches!(x, b'_' | b'.' | b'-'))
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

impl Reference {
    /// Parses and normalises a reference (`ParseNormalizedNamed`).
    pub fn parse(input: &str) -> Result<Reference> {
        let invalid = || anyhow!("invalid reference format");
        if input.is_empty() {
            return Err(invalid());
        }
        let (rest, digest) = match input.split_once('@') {
            Some((r, d)) => {
                let (algo, hex) = d.split_once(':').ok_or_else(invalid)?;
                if algo.is_empty() || hex.len() < 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit())
                {
                    return Err(invalid());
                }
                (r, Some(d.to_string()))
            }
            None => (input, None),
        };
        let last_slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (
                &rest[..last_slash + i],
                Some(rest[last_slash + i + 1..].to_string()),
            ),
            None => (rest, None),
        };
        if let Some(t) = &tag
            && !valid_tag(t)
        {
            return Err(invalid());
        }
        if is_hex64(name) {
            return Err(anyhow!(
                "invalid repository name repository name ({name}), cannot specify 64-byte hexadecimal strings"
            ));
        }
        let (domain, path) = match name.split_once('/') {
            Some((first, remainder))
                if first.contains('.')
                    || first.contains(':')
                    || first == "localhost"
                    || first.chars().any(|c| c.is_ascii_uppercase()) =>
            {
                (first.to_string(), remainder.to_string())
            }
            _ => (DEFAULT_DOMAIN.to_string(), name.to_string()),
        };
        let domain = if domain == "index.docker.io" {
            DEFAULT_DOMAIN.to_string()
        } else {
            domain
        };
        let path = if domain == DEFAULT_DOMAIN && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        if path.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(anyhow!(
                "invalid reference format: repository name ({path}) must be lowercase"
            ));
        }
        if !path.split('/').all(valid_component) || name.len() > 255 {
            return Err(invalid());
        }
        Ok(Reference {
            domain,
            path,
            tag,
            digest,
        })
    }

    /// Adds `latest` when neither tag nor digest is present (`TagNameOnly`).
    pub fn with_default_tag(mut self) -> Reference {
        if self.tag.is_none() && self.digest.is_none() {
            self.tag = Some("latest".into());
        }
        self
    }

    /// `docker.io/library/busybox`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    /// `busybox`, `myrepo/bb`, `localhost:5000/bb`.
    pub fn familiar_name(&self) -> String {
        if self.domain == DEFAULT_DOMAIN {
            self.path
                .strip_prefix("library/")
                .unwrap_or(&self.path)
                .to_string()
        } else {
            self.name()
        }
    }

    fn suffix(&self) -> String {
        let mut s = String::new();
        if let Some(t) = &self.tag {
            s.push(':');
            s.push_str(t);
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(d);
        }
        s
    }

    /// The familiar form with tag and digest: `busybox:latest`.
    pub fn familiar_string(&self) -> String {
        format!("{}{}", self.familiar_name(), self.suffix())
    }

    /// The fully qualified form: `docker.io/library/busybox:latest`.
    pub fn full_string(&self) -> String {
        format!("{}{}", self.name(), self.suffix())
    }

    /// What the pull API takes as `tag`: the digest if present, else the tag.
    pub fn api_tag(&self) -> String {
        self.digest
            .clone()
            .or_else(|| self.tag.clone())
            .unwrap_or_default()
    }

    /// The key of this registry in `~/.docker/config.json` `auths`.
    pub fn auth_key(&self) -> String {
        registry_auth_key(&self.domain)
    }
}

/// The `auths` key for a registry domain (Docker Hub uses its legacy index URL).
pub fn registry_auth_key(domain: &str) -> String {
    if domain == DEFAULT_DOMAIN || domain == "index.docker.io" || domain == "registry-1.docker.io" {
        "https://index.docker.io/v1/".to_string()
    } else {
        domain.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_like_distribution() {
        let r = Reference::parse("busybox").unwrap();
        assert_eq!(r.name(), "docker.io/library/busybox");
        assert_eq!(
            r.clone().with_default_tag().familiar_string(),
            "busybox:latest"
        );
        let r = Reference::parse("nginx:1.25").unwrap();
        assert_eq!(
            (r.name(), r.api_tag()),
            ("docker.io/library/nginx".into(), "1.25".into())
        );
        let r = Reference::parse("myrepo/bb:v1").unwrap();
        assert_eq!(r.full_string(), "docker.io/myrepo/bb:v1");
        assert_eq!(r.familiar_string(), "myrepo/bb:v1");
        let r = Reference::parse("localhost:5000/ns/img:tag").unwrap();
        assert_eq!(r.domain, "localhost:5000");
        assert_eq!(r.familiar_name(), "localhost:5000/ns/img");
        assert_eq!(r.auth_key(), "localhost:5000");
        let d = format!("alpine@sha256:{}", "a".repeat(64));
        let r = Reference::parse(&d).unwrap();
        assert_eq!(r.api_tag(), format!("sha256:{}", "a".repeat(64)));
        assert_eq!(
            Reference::parse("docker.io/library/alpine")
                .unwrap()
                .familiar_name(),
            "alpine"
        );
    }

    #[test]
    fn rejects_bad_references() {
        assert!(Reference::parse("").is_err());
        assert!(
            Reference::parse("Busybox")
                .unwrap_err()
                .to_string()
                .contains("must be lowercase")
        );
        assert!(Reference::parse("a:b:c").is_err());
        assert!(Reference::parse(&"a".repeat(64)).is_err());
        assert!(Reference::parse("bad_-name").is_err());
    }
}
