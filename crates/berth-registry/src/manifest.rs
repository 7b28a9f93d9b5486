//! Manifests as both sides need them: the four media types berth speaks (Docker schema 2
//! manifest and list, OCI manifest and index), one lenient document type that reads all of
//! them, the blobs a manifest refers to, and platform selection in an index.

use std::fmt;

use berth_store::Digest;
use serde::{Deserialize, Serialize};

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker schema 2 manifest.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker schema 2 manifest list.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker schema 1 (signed) manifest, refused.
pub const DOCKER_SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";
/// The `Accept` header a client sends for manifests, most preferred first.
pub const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

/// Layer media types whose blobs live elsewhere (`urls`) and are neither pushed nor checked.
const FOREIGN_LAYERS: &[&str] = &[
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
];

/// Which kind of document a manifest is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestKind {
    /// An image manifest (config + layers).
    Image,
    /// An index / manifest list (child manifests).
    Index,
}

/// Classifies a manifest media type; `None` for anything berth does not speak.
pub fn kind_of(media_type: &str) -> Option<ManifestKind> {
    match media_type {
        OCI_MANIFEST | DOCKER_MANIFEST => Some(ManifestKind::Image),
        OCI_INDEX | DOCKER_MANIFEST_LIST => Some(ManifestKind::Index),
        _ => None,
    }
}

/// The platform a manifest in an index is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    /// CPU architecture, e.g. `amd64`.
    pub architecture: String,
    /// Operating system, e.g. `linux`.
    pub os: String,
    /// CPU variant, e.g. `v7`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// OS version (Windows).
    #[serde(
        rename = "os.version",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_version: Option<String>,
}

impl Platform {
    /// The platform this binary runs on, in Go's names (`linux/amd64`, `linux/arm64/v8`).
    pub fn host() -> Platform {
        let (architecture, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "aarch64" => ("arm64", Some("v8")),
            "x86" => ("386", None),
            "arm" => ("arm", Some("v7")),
            "powerpc64" => ("ppc64le", None),
            "s390x" => ("s390x", None),
            "riscv64" => ("riscv64", None),
            other => (other, None),
        };
        Platform {
            architecture: architecture.to_string(),
            os: std::env::consts::OS.to_string(),
            variant: variant.map(str::to_string),
            os_version: None,
        }
    }

    /// Parses `os/arch[/variant]` as given to `--platform`.
    pub fn parse(s: &str) -> Option<Platform> {
        let parts: Vec<&str> = s.split('/').collect();
        let ok = |p: &&str| !p.is_empty();
        match parts.as_slice() {
            [os, arch] if ok(os) && ok(arch) => Some(Platform {
                architecture: arch.to_lowercase(),
                os: os.to_lowercase(),
                variant: None,
                os_version: None,
            }),
            [os, arch, variant] if ok(os) && ok(arch) && ok(variant) => Some(Platform {
                architecture: arch.to_lowercase(),
                os: os.to_lowercase(),
                variant: Some(variant.to_lowercase()),
                os_version: None,
            }),
            _ => None,
        }
    }

    /// Whether a manifest for `candidate` can run where `self` is wanted: same OS and
    /// architecture, and the same variant when `self` asks for one (arm64's `v8` is the
    /// default and equals no variant).
    pub fn matches(&self, candidate: &Platform) -> bool {
        let norm = |p: &Platform| -> Option<String> {
            match (p.architecture.as_str(), p.variant.as_deref()) {
                ("arm64", Some("v8")) | (_, Some("")) | (_, None) => None,
                (_, Some(v)) => Some(v.to_string()),
            }
        };
        self.os == candidate.os
            && self.architecture == candidate.architecture
            && (self.variant.is_none() || norm(self) == norm(candidate))
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// A content descriptor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// Media type of the referenced content.
    #[serde(default)]
    pub media_type: String,
    /// Digest of the content.
    pub digest: Digest,
    /// Size in bytes.
    pub size: u64,
    /// Where foreign content can be fetched.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
    /// The platform (in an index).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    /// The artifact type (OCI 1.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<serde_json::Map<String, serde_json::Value>>,
}

impl Descriptor {
    /// Whether this is a foreign (non-distributable) layer that registries do not hold.
    pub fn is_foreign(&self) -> bool {
        FOREIGN_LAYERS.contains(&self.media_type.as_str()) || !self.urls.is_empty()
    }
}

/// Any of the four manifest documents, read leniently.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// Always 2.
    pub schema_version: u32,
    /// The media type, when the document states it (OCI makes it optional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// The artifact type (OCI 1.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// The image configuration (image manifests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<Descriptor>,
    /// The layers, base first (image manifests).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<Descriptor>,
    /// The child manifests (indexes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub manifests: Vec<Descriptor>,
    /// The manifest this one refers to (OCI 1.1 referrers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Descriptor>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<serde_json::Map<String, serde_json::Value>>,
}

/// Why a manifest document was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// Not JSON of the expected shape.
    #[error("malformed manifest: {0}")]
    Malformed(String),
    /// A media type berth does not speak (schema 1, artifacts of unknown kind, ...).
    #[error("unsupported manifest media type {0:?}")]
    UnsupportedMediaType(String),
    /// The media type in the document and the one it was sent with disagree.
    #[error("manifest media type {document:?} does not match content type {header:?}")]
    MediaTypeMismatch {
        /// The `mediaType` field.
        document: String,
        /// The `Content-Type` header.
        header: String,
    },
}

impl Manifest {
    /// Parses a manifest and works out its media type from the `Content-Type` it came
    /// with (`content_type`, may be empty), its own `mediaType` field, or its shape.
    pub fn parse(bytes: &[u8], content_type: &str) -> Result<(Manifest, String), ManifestError> {
        let m: Manifest =
            serde_json::from_slice(bytes).map_err(|e| ManifestError::Malformed(e.to_string()))?;
        if m.schema_version != 2 {
            return Err(ManifestError::UnsupportedMediaType(format!(
                "schemaVersion {}",
                m.schema_version
            )));
        }
        // Content-Type parameters (`; charset=...`) are not part of the media type.
        let header = content_type.split(';').next().unwrap_or("").trim();
        let header = (kind_of(header).is_some()).then_some(header);
        let media_type = match (m.media_type.as_deref(), header) {
            (Some(doc), Some(h)) if doc != h => {
                return Err(ManifestError::MediaTypeMismatch {
                    document: doc.to_string(),
                    header: h.to_string(),
                });
            }
            (Some(doc), _) => doc.to_string(),
            (None, Some(h)) => h.to_string(),
            (None, None)
                if !content_type.is_empty()
                    && content_type != "application/json"
                    && content_type != "application/octet-stream" =>
            {
                return Err(ManifestError::UnsupportedMediaType(
                    content_type.to_string(),
                ));
            }
            (None, None) if m.config.is_some() => OCI_MANIFEST.to_string(),
            (None, None) if !m.manifests.is_empty() => OCI_INDEX.to_string(),
            (None, None) => return Err(ManifestError::UnsupportedMediaType(String::new())),
        };
        match kind_of(&media_type) {
            Some(ManifestKind::Image) if m.config.is_none() => Err(ManifestError::Malformed(
                "image manifest without config".to_string(),
            )),
            Some(_) => Ok((m, media_type)),
            None => Err(ManifestError::UnsupportedMediaType(media_type)),
        }
    }

    /// The blobs an image manifest needs in the registry: config and layers, foreign
    /// layers excluded.
    pub fn blobs(&self) -> Vec<&Descriptor> {
        self.config
            .iter()
            .chain(self.layers.iter())
            .filter(|d| !d.is_foreign())
            .collect()
    }

    /// The child manifest in an index that runs on `platform`. Entries without a platform
    /// and attestation entries (`unknown/unknown`) are skipped.
    pub fn select_platform(&self, platform: &Platform) -> Option<&Descriptor> {
        self.manifests
            .iter()
            .find(|d| d.platform.as_ref().is_some_and(|p| platform.matches(p)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    fn index() -> String {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST_LIST}","manifests":[
              {{"mediaType":"{DOCKER_MANIFEST}","digest":"{D1}","size":1,"platform":{{"architecture":"arm","os":"linux","variant":"v7"}}}},
              {{"mediaType":"{DOCKER_MANIFEST}","digest":"{D2}","size":2,"platform":{{"architecture":"arm64","os":"linux","variant":"v8"}}}}]}}"#
        )
    }

    #[test]
    fn parses_media_types_from_document_header_and_shape() {
        let (m, mt) = Manifest::parse(index().as_bytes(), "").unwrap();
        assert_eq!(mt, DOCKER_MANIFEST_LIST);
        assert_eq!(m.manifests.len(), 2);
        let oci = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"x","digest":"{D1}","size":3}},"layers":[{{"mediaType":"l","digest":"{D2}","size":4}}]}}"#
        );
        assert_eq!(Manifest::parse(oci.as_bytes(), "").unwrap().1, OCI_MANIFEST);
        assert_eq!(
            Manifest::parse(
                oci.as_bytes(),
                "application/vnd.docker.distribution.manifest.v2+json; charset=utf-8"
            )
            .unwrap()
            .1,
            DOCKER_MANIFEST
        );
        let (m, _) = Manifest::parse(oci.as_bytes(), "").unwrap();
        assert_eq!(m.blobs().len(), 2);
        assert!(matches!(
            Manifest::parse(index().as_bytes(), OCI_MANIFEST),
            Err(ManifestError::MediaTypeMismatch { .. })
        ));
        assert!(matches!(
            Manifest::parse(oci.as_bytes(), DOCKER_SCHEMA1_SIGNED),
            Err(ManifestError::UnsupportedMediaType(_))
        ));
        assert!(matches!(
            Manifest::parse(br#"{"schemaVersion":1,"name":"x"}"#, ""),
            Err(ManifestError::UnsupportedMediaType(_))
        ));
        assert!(matches!(
            Manifest::parse(b"not json", ""),
            Err(ManifestError::Malformed(_))
        ));
    }

    #[test]
    fn selects_platforms() {
        let (m, _) = Manifest::parse(index().as_bytes(), "").unwrap();
        let arm64 = Platform::parse("linux/arm64").unwrap();
        assert_eq!(m.select_platform(&arm64).unwrap().digest.as_str(), D2);
        let arm64v8 = Platform::parse("linux/arm64/v8").unwrap();
        assert_eq!(m.select_platform(&arm64v8).unwrap().digest.as_str(), D2);
        let armv7 = Platform::parse("linux/arm/v7").unwrap();
        assert_eq!(m.select_platform(&armv7).unwrap().digest.as_str(), D1);
        let armv6 = Platform::parse("linux/arm/v6").unwrap();
        assert!(m.select_platform(&armv6).is_none());
        assert!(
            m.select_platform(&Platform::parse("linux/amd64").unwrap())
                .is_none()
        );
        assert_eq!(
            Platform::parse("linux/arm/v7").unwrap().to_string(),
            "linux/arm/v7"
        );
        assert!(Platform::parse("linux").is_none());
        assert!(Platform::parse("linux//v7").is_none());
        if cfg!(all(target_arch = "x86_64", target_os = "linux")) {
            assert_eq!(Platform::host().to_string(), "linux/amd64");
        }
    }
}
