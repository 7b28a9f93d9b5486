//! Docker image references: parsing and normalisation exactly as the Docker CLI and daemon
//! do it (`busybox` → `docker.io/library/busybox:latest`), and the familiar short forms
//! used for display.

use std::fmt;

use crate::digest::Digest;
use crate::error::{Result, StoreError};

/// The registry that unqualified names belong to.
pub const DEFAULT_DOMAIN: &str = "docker.io";
/// The repository namespace of official images on the default registry.
const OFFICIAL_NAMESPACE: &str = "library";
/// The tag used when a reference names neither a tag nor a digest.
pub const DEFAULT_TAG: &str = "latest";
const MAX_NAME_LEN: usize = 255;

/// A normalised image reference: `domain/path[:tag][@digest]`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reference {
    domain: String,
    path: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

fn invalid(reason: &str) -> StoreError {
    if reason.is_empty() {
        StoreError::InvalidReference("invalid reference format".to_string())
    } else {
        StoreError::InvalidReference(format!("invalid reference format: {reason}"))
    }
}

impl Reference {
    /// Parses and normalises `s`, adding the `latest` tag when neither tag nor digest is
    /// given (what `docker pull busybox` means).
    pub fn parse(s: &str) -> Result<Reference> {
        Ok(Reference::parse_named(s)?.with_default_tag())
    }

    /// Parses and normalises `s` without adding a default tag (for `docker pull -a`,
    /// `docker images <repo>` filters and `docker push` of all tags).
    pub fn parse_named(s: &str) -> Result<Reference> {
        if s.is_empty() {
            return Err(invalid(""));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((rest, d)) => {
                let digest = Digest::parse(d).map_err(|_| invalid(""))?;
                (rest, Some(digest))
            }
            None => (s, None),
        };
        let (name, tag) = match rest.rfind(':') {
            Some(i) if !rest[i + 1..].contains('/') => (&rest[..i], Some(&rest[i + 1..])),
            _ => (rest, None),
        };
        if let Some(tag) = tag
            && !valid_tag(tag)
        {
            return Err(invalid(""));
        }
        if name.is_empty() {
            return Err(invalid(""));
        }
        if is_hex64(name) && tag.is_none() && digest.is_none() {
            return Err(StoreError::InvalidReference(format!(
                "invalid repository name ({name}), cannot specify 64-byte hexadecimal strings"
            )));
        }
        let (domain, path) = split_domain(name);
        if !valid_domain(&domain) {
            return Err(invalid(""));
        }
        if path.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(invalid("repository name must be lowercase"));
        }
        if !path.split('/').all(valid_path_component) {
            return Err(invalid(""));
        }
        if domain.len() + 1 + path.len() > MAX_NAME_LEN {
            return Err(invalid(
                "repository name must not be more than 255 characters",
            ));
        }
        Ok(Reference {
            domain,
            path,
            tag: tag.map(str::to_string),
            digest,
        })
    }

    /// Returns the reference with the `latest` tag if it has neither tag nor digest.
    pub fn with_default_tag(mut self) -> Reference {
        if self.tag.is_none() && self.digest.is_none() {
            self.tag = Some(DEFAULT_TAG.to_string());
        }
        self
    }

    /// Returns the same repository with `tag` and without digest.
    pub fn with_tag(&self, tag: &str) -> Result<Reference> {
        if !valid_tag(tag) {
            return Err(invalid(""));
        }
        Ok(Reference {
            domain: self.domain.clone(),
            path: self.path.clone(),
            tag: Some(tag.to_string()),
            digest: None,
        })
    }

    /// The full repository name, e.g. `docker.io/library/busybox`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    /// The registry host (with port), e.g. `docker.io` or `localhost:5000`.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The repository path on the registry, e.g. `library/busybox`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The repository name as users write it: `busybox`, `foo/bar`, `localhost:5000/x`.
    pub fn familiar_name(&self) -> String {
        if self.domain == DEFAULT_DOMAIN {
            match self.path.strip_prefix("library/") {
                Some(rest) if !rest.contains('/') => rest.to_string(),
                _ => self.path.clone(),
            }
        } else {
            self.name()
        }
    }

    /// The tag, if any.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest, if any.
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// The familiar form with tag and digest, e.g. `busybox:latest`.
    pub fn familiar_string(&self) -> String {
        self.render(&self.familiar_name())
    }

    fn render(&self, name: &str) -> String {
        let mut s = name.to_string();
        if let Some(t) = &self.tag {
            s.push(':');
            s.push_str(t);
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(d.as_str());
        }
        s
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render(&self.name()))
    }
}

impl fmt::Debug for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::str::FromStr for Reference {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<Reference> {
        Reference::parse(s)
    }
}

/// Splits a name into domain and path following Docker's `splitDockerDomain`.
fn split_domain(name: &str) -> (String, String) {
    let (mut domain, mut path) = match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.to_lowercase() != first =>
        {
            (first.to_string(), rest.to_string())
        }
        _ => (DEFAULT_DOMAIN.to_string(), name.to_string()),
    };
    if domain == "index.docker.io" {
        domain = DEFAULT_DOMAIN.to_string();
    }
    if domain == DEFAULT_DOMAIN && !path.contains('/') {
        path = format!("{OFFICIAL_NAMESPACE}/{path}");
    }
    (domain, path)
}

fn is_hex64(s: &str) -> bool {
    crate::digest::is_hex64(s)
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// `[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*`
fn valid_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() || !is_alnum(b[0]) || !is_alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !is_alnum(b[i]) {
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

/// `[\w][\w.-]{0,127}`
fn valid_tag(t: &str) -> bool {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && word(b[0])
        && b.iter().all(|&x| word(x) || x == b'.' || x == b'-')
}

/// Host name or IPv6 literal with an optional port.
fn valid_domain(d: &str) -> bool {
    let (host, port) = if let Some(rest) = d.strip_prefix('[') {
        match rest.split_once(']') {
            Some((ip6, after)) => {
                if ip6.is_empty()
                    || !ip6
                        .bytes()
                        .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
                {
                    return false;
                }
                return after.is_empty() || after.strip_prefix(':').is_some_and(valid_port);
            }
            None => return false,
        }
    } else {
        match d.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (d, None),
        }
    };
    if let Some(p) = port
        && !valid_port(p)
    {
        return false;
    }
    !host.is_empty()
        && host.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|&x| x.is_ascii_alphanumeric() || x == b'-')
        })
}

fn valid_port(p: &str) -> bool {
    !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn normalisation_table() {
        let cases: &[(&str, &str, &str, &str)] = &[
            // input, Display, name(), familiar_string()
            (
                "busybox",
                "docker.io/library/busybox:latest",
                "docker.io/library/busybox",
                "busybox:latest",
            ),
            (
                "busybox:1.36",
                "docker.io/library/busybox:1.36",
                "docker.io/library/busybox",
                "busybox:1.36",
            ),
            (
                "library/busybox",
                "docker.io/library/busybox:latest",
                "docker.io/library/busybox",
                "busybox:latest",
            ),
            (
                "docker.io/busybox",
                "docker.io/library/busybox:latest",
                "docker.io/library/busybox",
                "busybox:latest",
            ),
            (
                "index.docker.io/busybox",
                "docker.io/library/busybox:latest",
                "docker.io/library/busybox",
                "busybox:latest",
            ),
            (
                "foo/bar",
                "docker.io/foo/bar:latest",
                "docker.io/foo/bar",
                "foo/bar:latest",
            ),
            (
                "docker.io/foo/bar:v1",
                "docker.io/foo/bar:v1",
                "docker.io/foo/bar",
                "foo/bar:v1",
            ),
            (
                "docker.io/library/a/b",
                "docker.io/library/a/b:latest",
                "docker.io/library/a/b",
                "library/a/b:latest",
            ),
            (
                "localhost/x",
                "localhost/x:latest",
                "localhost/x",
                "localhost/x:latest",
            ),
            (
                "localhost:5000/x:1",
                "localhost:5000/x:1",
                "localhost:5000/x",
                "localhost:5000/x:1",
            ),
            (
                "quay.io/a/b/c:t-1.2_x",
                "quay.io/a/b/c:t-1.2_x",
                "quay.io/a/b/c",
                "quay.io/a/b/c:t-1.2_x",
            ),
            (
                "127.0.0.1:5000/ns/name",
                "127.0.0.1:5000/ns/name:latest",
                "127.0.0.1:5000/ns/name",
                "127.0.0.1:5000/ns/name:latest",
            ),
            (
                "[::1]:5000/x",
                "[::1]:5000/x:latest",
                "[::1]:5000/x",
                "[::1]:5000/x:latest",
            ),
            (
                "a__b/c-d--e.f",
                "docker.io/a__b/c-d--e.f:latest",
                "docker.io/a__b/c-d--e.f",
                "a__b/c-d--e.f:latest",
            ),
            (
                "localhost",
                "docker.io/library/localhost:latest",
                "docker.io/library/localhost",
                "localhost:latest",
            ),
        ];
        for (input, display, name, familiar) in cases {
            let r = Reference::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(r.to_string(), *display, "display of {input}");
            assert_eq!(r.name(), *name, "name of {input}");
            assert_eq!(r.familiar_string(), *familiar, "familiar of {input}");
        }
    }

    #[test]
    fn digests() {
        let r = Reference::parse(&format!("busybox@{D}")).unwrap();
        assert_eq!(r.tag(), None);
        assert_eq!(r.digest().unwrap().as_str(), D);
        assert_eq!(r.to_string(), format!("docker.io/library/busybox@{D}"));
        let r = Reference::parse(&format!("localhost:5000/x:1@{D}")).unwrap();
        assert_eq!(r.tag(), Some("1"));
        assert_eq!(r.familiar_string(), format!("localhost:5000/x:1@{D}"));
        assert!(Reference::parse("busybox@sha256:abc").is_err());
    }

    #[test]
    fn untagged_and_default_tag() {
        let r = Reference::parse_named("busybox").unwrap();
        assert_eq!(r.tag(), None);
        assert_eq!(r.to_string(), "docker.io/library/busybox");
        assert_eq!(r.with_default_tag().tag(), Some("latest"));
    }

    #[test]
    fn rejections() {
        let upper = Reference::parse("BusyBox").unwrap_err().to_string();
        assert_eq!(
            upper,
            "invalid reference format: repository name must be lowercase"
        );
        let upper = Reference::parse("foo/Bar:1").unwrap_err().to_string();
        assert_eq!(
            upper,
            "invalid reference format: repository name must be lowercase"
        );
        // An upper-case first component is a domain, so this one is fine.
        assert_eq!(Reference::parse("Foo/bar").unwrap().name(), "Foo/bar");
        for bad in [
            "",
            ":tag",
            "busybox:",
            "bus//box",
            "-bad",
            "bad-",
            "a..b",
            "busybox:-x",
            "x:tag/y:z:",
            "busybox:tag:extra",
            "a@b",
            "a b",
            &"a".repeat(256),
        ] {
            assert!(
                matches!(Reference::parse(bad), Err(StoreError::InvalidReference(_))),
                "{bad:?} should be rejected"
            );
        }
        let hex = "a".repeat(64);
        assert!(
            Reference::parse(&hex)
                .unwrap_err()
                .to_string()
                .contains("64-byte hexadecimal")
        );
    }
}
