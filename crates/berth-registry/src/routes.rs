//! The OCI distribution v1.1 route table, shared by the client (path builders) and the
//! server (one parser that turns a request path into a [`Route`]).
//!
//! Repository names contain slashes, so the path is parsed from its end: the last one to
//! three segments say which endpoint it is, everything between `/v2/` and them is the name.
//! Names are validated here once (`[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*` components joined
//! by `/`), which refuses `..`, upper case, empty components and percent-encoded tricks.

use std::fmt;

use berth_store::Digest;
use hyper::Method;

/// Manifests larger than this are refused by both the server and the client.
pub const MAX_MANIFEST_BYTES: u64 = 4 << 20;
/// Longest repository name accepted (distribution's limit).
pub const MAX_NAME_LEN: usize = 255;

/// A repository name that passed validation, e.g. `library/busybox`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoName(String);

impl RepoName {
    /// Validates a repository name.
    pub fn parse(s: &str) -> Result<RepoName, RouteError> {
        if s.is_empty() || s.len() > MAX_NAME_LEN || !s.split('/').all(valid_component) {
            return Err(RouteError::NameInvalid(s.to_string()));
        }
        Ok(RepoName(s.to_string()))
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// One path component: alphanumeric runs joined by `.`, `_`, `__` or runs of `-`.
fn valid_component(c: &str) -> bool {
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
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-')) {
            return false;
        }
    }
    true
}

/// Whether `t` is a valid tag: `[\w][\w.-]{0,127}`.
pub fn valid_tag(t: &str) -> bool {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && word(b[0])
        && b.iter().all(|&x| word(x) || x == b'.' || x == b'-')
}

/// What a manifest URL names: a tag or a digest.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum ManifestRef {
    /// A tag such as `latest`.
    Tag(String),
    /// A content digest.
    Digest(Digest),
}

impl ManifestRef {
    /// Parses a tag or a `sha256:` digest.
    pub fn parse(s: &str) -> Result<ManifestRef, RouteError> {
        if s.contains(':') {
            Digest::parse(s)
                .map(ManifestRef::Digest)
                .map_err(|_| RouteError::DigestInvalid(s.to_string()))
        } else if valid_tag(s) {
            Ok(ManifestRef::Tag(s.to_string()))
        } else {
            Err(RouteError::TagInvalid(s.to_string()))
        }
    }
}

impl fmt::Display for ManifestRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ManifestRef::Tag(t) => f.write_str(t),
            ManifestRef::Digest(d) => f.write_str(d.as_str()),
        }
    }
}

impl fmt::Debug for ManifestRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Why a path is not a valid route.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// The path is not one of the distribution endpoints.
    #[error("no route for {0}")]
    NotFound(String),
    /// The repository name is invalid.
    #[error("invalid repository name {0:?}")]
    NameInvalid(String),
    /// A digest in the path is malformed or of an unsupported algorithm.
    #[error("invalid digest {0:?}")]
    DigestInvalid(String),
    /// A tag in the path is malformed.
    #[error("invalid tag {0:?}")]
    TagInvalid(String),
}

/// One endpoint of the distribution API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/v2/`: the API version check (and the auth probe).
    Base,
    /// `/v2/_catalog`: repository listing (`n`, `last`).
    Catalog,
    /// `/v2/<name>/tags/list` (`n`, `last`).
    Tags {
        /// The repository.
        name: RepoName,
    },
    /// `/v2/<name>/manifests/<reference>`.
    Manifest {
        /// The repository.
        name: RepoName,
        /// Tag or digest.
        reference: ManifestRef,
    },
    /// `/v2/<name>/blobs/<digest>`.
    Blob {
        /// The repository.
        name: RepoName,
        /// The blob digest.
        digest: Digest,
    },
    /// `/v2/<name>/blobs/uploads/`: starts an upload (`mount`, `from`, `digest`).
    UploadStart {
        /// The repository.
        name: RepoName,
    },
    /// `/v2/<name>/blobs/uploads/<id>`: an upload session.
    Upload {
        /// The repository.
        name: RepoName,
        /// The session id the server handed out.
        id: String,
    },
    /// `/v2/<name>/referrers/<digest>` (`artifactType`).
    Referrers {
        /// The repository.
        name: RepoName,
        /// The subject manifest digest.
        digest: Digest,
    },
}

fn valid_upload_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn digest(s: &str) -> Result<Digest, RouteError> {
    Digest::parse(s).map_err(|_| RouteError::DigestInvalid(s.to_string()))
}

impl Route {
    /// Parses a request path (without query string) into a route.
    pub fn parse(path: &str) -> Result<Route, RouteError> {
        let not_found = || RouteError::NotFound(path.to_string());
        let rest = path.strip_prefix("/v2").ok_or_else(not_found)?;
        if rest.is_empty() || rest == "/" {
            return Ok(Route::Base);
        }
        let rest = rest.strip_prefix('/').ok_or_else(not_found)?;
        if rest == "_catalog" {
            return Ok(Route::Catalog);
        }
        let segments: Vec<&str> = rest.split('/').collect();
        let n = segments.len();
        let name_of = |end: usize| -> Result<RepoName, RouteError> {
            if end == 0 {
                return Err(not_found());
            }
            RepoName::parse(&segments[..end].join("/"))
        };
        // `/blobs/uploads/` ends with an empty segment.
        if n >= 3 && segments[n - 1].is_empty() && segments[n - 3..n - 1] == ["blobs", "uploads"] {
            return Ok(Route::UploadStart {
                name: name_of(n - 3)?,
            });
        }
        if n >= 3 && segments[n - 3..n - 1] == ["blobs", "uploads"] {
            let id = segments[n - 1];
            if !valid_upload_id(id) {
                return Err(RouteError::NotFound(path.to_string()));
            }
            return Ok(Route::Upload {
                name: name_of(n - 3)?,
                id: id.to_string(),
            });
        }
        if n >= 2 && segments[n - 2..] == ["tags", "list"] {
            return Ok(Route::Tags {
                name: name_of(n - 2)?,
            });
        }
        if n >= 2 {
            let last = segments[n - 1];
            match segments[n - 2] {
                "manifests" => {
                    return Ok(Route::Manifest {
                        name: name_of(n - 2)?,
                        reference: ManifestRef::parse(last)?,
                    });
                }
                "blobs" => {
                    return Ok(Route::Blob {
                        name: name_of(n - 2)?,
                        digest: digest(last)?,
                    });
                }
                "referrers" => {
                    return Ok(Route::Referrers {
                        name: name_of(n - 2)?,
                        digest: digest(last)?,
                    });
                }
                _ => {}
            }
        }
        Err(not_found())
    }

    /// The request path of this route.
    pub fn path(&self) -> String {
        match self {
            Route::Base => "/v2/".to_string(),
            Route::Catalog => "/v2/_catalog".to_string(),
            Route::Tags { name } => format!("/v2/{name}/tags/list"),
            Route::Manifest { name, reference } => format!("/v2/{name}/manifests/{reference}"),
            Route::Blob { name, digest } => format!("/v2/{name}/blobs/{digest}"),
            Route::UploadStart { name } => format!("/v2/{name}/blobs/uploads/"),
            Route::Upload { name, id } => format!("/v2/{name}/blobs/uploads/{id}"),
            Route::Referrers { name, digest } => format!("/v2/{name}/referrers/{digest}"),
        }
    }

    /// The request path with a query string built from `query` (values are percent-encoded).
    pub fn path_with_query(&self, query: &[(&str, &str)]) -> String {
        with_query(&self.path(), query)
    }

    /// The methods this endpoint answers.
    pub fn methods(&self) -> &'static [Method] {
        match self {
            Route::Base | Route::Catalog | Route::Tags { .. } | Route::Referrers { .. } => {
                &[Method::GET, Method::HEAD]
            }
            Route::Manifest { .. } => &[Method::GET, Method::HEAD, Method::PUT, Method::DELETE],
            Route::Blob { .. } => &[Method::GET, Method::HEAD, Method::DELETE],
            Route::UploadStart { .. } => &[Method::POST],
            Route::Upload { .. } => &[Method::GET, Method::PATCH, Method::PUT, Method::DELETE],
        }
    }

    /// The repository the route is about, if any.
    pub fn name(&self) -> Option<&RepoName> {
        match self {
            Route::Base | Route::Catalog => None,
            Route::Tags { name }
            | Route::Manifest { name, .. }
            | Route::Blob { name, .. }
            | Route::UploadStart { name }
            | Route::Upload { name, .. }
            | Route::Referrers { name, .. } => Some(name),
        }
    }
}

/// Appends `query` to `path` (or to a URL that may already have a query string).
pub fn with_query(path: &str, query: &[(&str, &str)]) -> String {
    if query.is_empty() {
        return path.to_string();
    }
    let mut ser = form_urlencoded::Serializer::new(String::new());
    for (k, v) in query {
        ser.append_pair(k, v);
    }
    let sep = if path.contains('?') { '&' } else { '?' };
    format!("{path}{sep}{}", ser.finish())
}

/// The `Link` header value pointing at the next page of a paginated listing.
pub fn next_link(route: &Route, n: usize, last: &str) -> String {
    format!(
        "<{}>; rel=\"next\"",
        route.path_with_query(&[("last", last), ("n", &n.to_string())])
    )
}

/// The target of a `Link: <url>; rel="next"` header, if it has one.
pub fn parse_next_link(header: &str) -> Option<String> {
    header.split(',').find_map(|part| {
        let (target, params) = part.trim().split_once(';')?;
        let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
        params
            .split(';')
            .any(|p| {
                let p = p.trim();
                p == "rel=\"next\"" || p == "rel=next"
            })
            .then(|| target.to_string())
    })
}

/// Parses a `Content-Range`/`Range` value of an upload, `<start>-<end>` (an optional
/// `bytes=` or `bytes ` prefix is accepted), into inclusive offsets.
pub fn parse_upload_range(value: &str) -> Option<(u64, u64)> {
    let v = value.trim();
    let v = v
        .strip_prefix("bytes=")
        .or_else(|| v.strip_prefix("bytes "))
        .unwrap_or(v);
    let v = v.split('/').next()?;
    let (a, b) = v.split_once('-')?;
    let (a, b) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
    (a <= b).then_some((a, b))
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn name(s: &str) -> RepoName {
        RepoName::parse(s).unwrap()
    }

    #[test]
    fn parses_every_endpoint_and_round_trips() {
        let d = Digest::parse(D).unwrap();
        let cases = vec![
            ("/v2/".to_string(), Route::Base),
            ("/v2/_catalog".to_string(), Route::Catalog),
            (
                "/v2/a/b/tags/list".to_string(),
                Route::Tags { name: name("a/b") },
            ),
            (
                "/v2/library/busybox/manifests/latest".to_string(),
                Route::Manifest {
                    name: name("library/busybox"),
                    reference: ManifestRef::Tag("latest".into()),
                },
            ),
            (
                format!("/v2/x/manifests/{D}"),
                Route::Manifest {
                    name: name("x"),
                    reference: ManifestRef::Digest(d.clone()),
                },
            ),
            (
                format!("/v2/x/blobs/{D}"),
                Route::Blob {
                    name: name("x"),
                    digest: d.clone(),
                },
            ),
            (
                "/v2/x/y/blobs/uploads/".to_string(),
                Route::UploadStart { name: name("x/y") },
            ),
            (
                "/v2/x/blobs/uploads/abc-123".to_string(),
                Route::Upload {
                    name: name("x"),
                    id: "abc-123".into(),
                },
            ),
            (
                format!("/v2/x/referrers/{D}"),
                Route::Referrers {
                    name: name("x"),
                    digest: d.clone(),
                },
            ),
        ];
        for (path, route) in cases {
            assert_eq!(Route::parse(&path).unwrap(), route, "{path}");
            assert_eq!(route.path(), path);
        }
        assert_eq!(Route::parse("/v2").unwrap(), Route::Base);
    }

    #[test]
    fn names_that_look_like_endpoints_parse_from_the_end() {
        // A repository may itself contain "manifests" or "blobs" as a component.
        assert_eq!(
            Route::parse("/v2/manifests/manifests/v1").unwrap(),
            Route::Manifest {
                name: name("manifests"),
                reference: ManifestRef::Tag("v1".into())
            }
        );
        assert_eq!(
            Route::parse("/v2/blobs/uploads/tags/list").unwrap(),
            Route::Tags {
                name: name("blobs/uploads")
            }
        );
    }

    #[test]
    fn refuses_bad_names() {
        for bad in [
            "..", "a/../b", "A", "a//b", "/a", "a/", "a..b", "-a", "a-", "a%2e%2e", "a b",
            ".hidden", "a___b",
        ] {
            assert!(
                matches!(RepoName::parse(bad), Err(RouteError::NameInvalid(_))),
                "{bad:?} should be invalid"
            );
        }
        for good in ["a", "a/b/c", "a.b", "a_b", "a__b", "a---b", "0x/y9"] {
            assert!(RepoName::parse(good).is_ok(), "{good:?} should be valid");
        }
        assert!(RepoName::parse(&"a".repeat(256)).is_err());
        assert!(matches!(
            Route::parse("/v2/../etc/manifests/latest"),
            Err(RouteError::NameInvalid(_))
        ));
        assert!(matches!(
            Route::parse("/v2/Upper/tags/list"),
            Err(RouteError::NameInvalid(_))
        ));
    }

    #[test]
    fn refuses_bad_digests_tags_and_paths() {
        assert!(matches!(
            Route::parse("/v2/x/blobs/sha256:abc"),
            Err(RouteError::DigestInvalid(_))
        ));
        assert!(matches!(
            Route::parse("/v2/x/manifests/.bad"),
            Err(RouteError::TagInvalid(_))
        ));
        assert!(matches!(Route::parse("/v3/"), Err(RouteError::NotFound(_))));
        assert!(matches!(
            Route::parse("/v2/x"),
            Err(RouteError::NotFound(_))
        ));
        assert!(matches!(
            Route::parse("/v2/x/blobs/uploads/a.b"),
            Err(RouteError::NotFound(_))
        ));
        assert!(!valid_tag(&"a".repeat(129)));
        assert!(valid_tag("v1.0-rc_1"));
    }

    #[test]
    fn queries_links_and_ranges() {
        let r = Route::Tags { name: name("a/b") };
        assert_eq!(
            r.path_with_query(&[("n", "2"), ("last", "x y")]),
            "/v2/a/b/tags/list?n=2&last=x+y"
        );
        assert_eq!(
            with_query("/u?a=1", &[("digest", D)]),
            format!("/u?a=1&digest=sha256%3A{}", &D[7..])
        );
        let link = next_link(&r, 2, "v1");
        assert_eq!(link, "</v2/a/b/tags/list?last=v1&n=2>; rel=\"next\"");
        assert_eq!(
            parse_next_link(&link).as_deref(),
            Some("/v2/a/b/tags/list?last=v1&n=2")
        );
        assert_eq!(parse_next_link("</x>; rel=\"prev\""), None);
        assert_eq!(parse_upload_range("0-99"), Some((0, 99)));
        assert_eq!(parse_upload_range("bytes=5-9"), Some((5, 9)));
        assert_eq!(parse_upload_range("bytes 5-9/100"), Some((5, 9)));
        assert_eq!(parse_upload_range("9-5"), None);
        assert_eq!(parse_upload_range("x"), None);
    }
}
