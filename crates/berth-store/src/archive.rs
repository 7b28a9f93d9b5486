//! `docker save` / `docker load` archives. [`Store::load`] reads both the legacy
//! docker-archive (`manifest.json`, `<id>/layer.tar`, `repositories`) and the Docker 25+
//! format (an OCI image layout — `oci-layout`, `index.json`, `blobs/sha256/…` — plus
//! `manifest.json`), gzip-compressed or not. [`Store::save`] writes the Docker 25+ format.
//!
//! Every file of an archive is streamed into the content store as it is read (files under
//! `blobs/sha256/` must hash to their name); layers are then checked against the DiffIDs
//! of their image config while they are unpacked. On any error nothing is named and
//! the partial blobs and snapshots are garbage-collected.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::error::{Result, StoreError};
use crate::image::{
    ImageRecord, LayerInfo, MEDIA_TYPE_DOCKER_LIST, MEDIA_TYPE_DOCKER_MANIFEST, MEDIA_TYPE_INDEX,
    MEDIA_TYPE_MANIFEST, manifest_json, parse_config,
};
use crate::layer;
use crate::reference::Reference;
use crate::store::Store;

const ANNOTATION_IMAGE_NAME: &str = "io.containerd.image.name";
const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
const METADATA_FILES: [&str; 4] = ["manifest.json", "index.json", "oci-layout", "repositories"];
const MAX_METADATA_SIZE: u64 = 64 << 20;

/// An image that [`Store::load`] stored, with the tags it applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedImage {
    /// The image id.
    pub id: Digest,
    /// The references now pointing at it.
    pub tags: Vec<Reference>,
}

/// What [`Store::save`] should include.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageSelector {
    /// An image by id, saved without tags.
    Id(Digest),
    /// One tagged (or digest) reference, saved with that tag.
    Tagged(Reference),
    /// Every tag of a repository.
    Repository(Reference),
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ManifestEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    #[serde(default)]
    layers: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    #[serde(default)]
    media_type: String,
    digest: Digest,
    size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    annotations: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    platform: Option<Platform>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Platform {
    architecture: String,
    os: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Index {
    schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    media_type: Option<String>,
    manifests: Vec<Descriptor>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct OciManifest {
    config: Descriptor,
    #[serde(default)]
    layers: Vec<Descriptor>,
}

/// One image found in an archive, before it is unpacked.
struct Candidate {
    config: Digest,
    layers: Vec<Digest>,
    tags: Vec<Reference>,
    /// The archive's own manifest: (digest, media type, layer media types).
    manifest: Option<(Digest, String, Vec<String>)>,
}

fn bad(msg: impl Into<String>) -> StoreError {
    StoreError::InvalidArchive(msg.into())
}

/// Normalises a path inside the archive, refusing ones that climb out of it.
fn clean_path(raw: &str) -> Result<String> {
    let mut out: Vec<&str> = Vec::new();
    for c in raw.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop()
                    .ok_or_else(|| bad(format!("path {raw:?} escapes the archive")))?;
            }
            c => out.push(c),
        }
    }
    Ok(out.join("/"))
}

fn parse_json<T: serde::de::DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| bad(format!("{what}: {e}")))
}

fn host_platform() -> (&'static str, &'static str) {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    ("linux", arch)
}

/// The archive's files, stored as blobs, and its small metadata files in memory.
#[derive(Default)]
struct ArchiveFiles {
    blobs: HashMap<String, Digest>,
    links: HashMap<String, String>,
    metadata: HashMap<String, Vec<u8>>,
}

impl ArchiveFiles {
    fn blob(&self, path: &str) -> Result<Digest> {
        let mut p = clean_path(path)?;
        for _ in 0..32 {
            if let Some(d) = self.blobs.get(&p) {
                return Ok(d.clone());
            }
            match self.links.get(&p) {
                Some(t) => p = t.clone(),
                None => break,
            }
        }
        Err(bad(format!("file {path} is missing from the archive")))
    }
}

impl Store {
    /// Loads every image of a `docker save` archive and applies its tags.
    pub fn load(&self, reader: impl Read) -> Result<Vec<LoadedImage>> {
        let result = {
            let _guard = self.gc_lock.read().unwrap_or_else(|p| p.into_inner());
            self.load_locked(reader)
        };
        if result.is_err() {
            self.cleanup_after_failure();
        }
        result
    }

    fn load_locked(&self, reader: impl Read) -> Result<Vec<LoadedImage>> {
        let files = self.read_archive(reader)?;
        let candidates = self.candidates(&files)?;
        if candidates.is_empty() {
            return Err(bad(
                "no images found (neither manifest.json nor index.json lists any)",
            ));
        }
        let mut records: Vec<(ImageRecord, Vec<Reference>)> = Vec::new();
        for c in candidates {
            if let Some((_, tags)) = records.iter_mut().find(|(r, _)| r.id == c.config) {
                tags.extend(c.tags);
                continue;
            }
            let rec = self.unpack_candidate(&c)?;
            records.push((rec, c.tags));
        }
        let now = chrono::Utc::now();
        self.meta.write(|tx| {
            for (rec, tags) in &mut records {
                tags.sort();
                tags.dedup();
                if !tags.is_empty() {
                    rec.last_tag_time = Some(now);
                }
                tx.put_image(rec)?;
                for t in tags.iter() {
                    tx.put_name(&t.to_string(), &rec.id)?;
                }
            }
            Ok(())
        })?;
        Ok(records
            .into_iter()
            .map(|(rec, tags)| LoadedImage { id: rec.id, tags })
            .collect())
    }

    fn read_archive(&self, reader: impl Read) -> Result<ArchiveFiles> {
        let (_, stream) = layer::decompress(reader)?;
        let mut archive = tar::Archive::new(stream);
        let mut files = ArchiveFiles::default();
        for entry in archive
            .entries()
            .map_err(|e| bad(format!("read tar: {e}")))?
        {
            let mut entry = entry.map_err(|e| bad(format!("read tar entry: {e}")))?;
            let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let path = clean_path(&raw)?;
            match entry.header().entry_type() {
                tar::EntryType::Symlink | tar::EntryType::Link => {
                    let is_sym = entry.header().entry_type() == tar::EntryType::Symlink;
                    let target = entry
                        .link_name_bytes()
                        .map(|b| String::from_utf8_lossy(&b).into_owned())
                        .ok_or_else(|| bad(format!("link {raw} has no target")))?;
                    let base = match (is_sym, path.rsplit_once('/')) {
                        (true, Some((dir, _))) => format!("{dir}/{target}"),
                        _ => target,
                    };
                    files.links.insert(path, clean_path(&base)?);
                }
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    let size = entry.size();
                    if METADATA_FILES.contains(&path.as_str()) {
                        if size > MAX_METADATA_SIZE {
                            return Err(bad(format!("{path} is too large ({size} bytes)")));
                        }
                        let mut buf = Vec::new();
                        entry
                            .read_to_end(&mut buf)
                            .map_err(|e| bad(format!("read {path}: {e}")))?;
                        if buf.len() as u64 != size {
                            return Err(bad(format!("truncated archive: {path}")));
                        }
                        files.metadata.insert(path, buf);
                        continue;
                    }
                    let name = path.rsplit('/').next().unwrap_or("");
                    if path.contains('/')
                        && !path.starts_with("blobs/")
                        && (name == "json" || name == "VERSION")
                    {
                        continue; // legacy per-layer metadata, superseded by the image config
                    }
                    let expected = match path.strip_prefix("blobs/sha256/") {
                        Some(hex) => Some(
                            Digest::from_hex(hex)
                                .map_err(|_| bad(format!("bad blob name {path}")))?,
                        ),
                        None => None,
                    };
                    let mut w = self.content.writer()?;
                    io::copy(&mut entry, &mut w).map_err(|e| bad(format!("read {path}: {e}")))?;
                    if w.written() != size {
                        return Err(bad(format!(
                            "truncated archive: {path} has {} of {size} bytes",
                            w.written()
                        )));
                    }
                    let digest = w
                        .commit(expected.as_ref(), Some(size))
                        .map_err(|e| match e {
                            StoreError::DigestMismatch { expected, actual } => bad(format!(
                                "{path} is corrupt: its content is {actual}, not {expected}"
                            )),
                            other => other,
                        })?;
                    files.blobs.insert(path, digest);
                }
                _ => {}
            }
        }
        Ok(files)
    }

    fn candidates(&self, files: &ArchiveFiles) -> Result<Vec<Candidate>> {
        let mut oci: Vec<Candidate> = Vec::new();
        if let Some(bytes) = files.metadata.get("index.json") {
            let index: Index = parse_json("index.json", bytes)?;
            for desc in &index.manifests {
                if let Some(c) = self.oci_candidate(files, desc, 0)? {
                    oci.push(c);
                }
            }
        }
        let Some(bytes) = files.metadata.get("manifest.json") else {
            return Ok(oci);
        };
        let entries: Vec<ManifestEntry> = parse_json("manifest.json", bytes)?;
        let mut out = Vec::new();
        for e in entries {
            let config = files.blob(&e.config)?;
            let layers = e
                .layers
                .iter()
                .map(|l| files.blob(l))
                .collect::<Result<Vec<_>>>()?;
            let mut tags = Vec::new();
            for t in e.repo_tags.unwrap_or_default() {
                tags.push(
                    Reference::parse(&t)
                        .map_err(|err| bad(format!("manifest.json tag {t:?}: {err}")))?,
                );
            }
            let manifest = oci
                .iter()
                .find(|c| c.config == config && c.layers == layers)
                .and_then(|c| c.manifest.clone());
            out.push(Candidate {
                config,
                layers,
                tags,
                manifest,
            });
        }
        Ok(out)
    }

    /// Follows an index.json descriptor to an image manifest (choosing the host platform in
    /// nested indexes).
    fn oci_candidate(
        &self,
        files: &ArchiveFiles,
        desc: &Descriptor,
        depth: usize,
    ) -> Result<Option<Candidate>> {
        if depth > 4 {
            return Err(bad("image indexes nest too deeply"));
        }
        let path = format!("blobs/sha256/{}", desc.digest.hex());
        let Ok(digest) = files.blob(&path) else {
            // Multi-platform saves may list manifests whose blobs were not exported.
            return Ok(None);
        };
        let bytes = self.content.read_to_vec(&digest)?;
        if bytes.len() as u64 != desc.size {
            return Err(bad(format!(
                "{} has {} bytes, index says {}",
                desc.digest,
                bytes.len(),
                desc.size
            )));
        }
        let value: serde_json::Value = parse_json(&path, &bytes)?;
        let media_type = value
            .get("mediaType")
            .and_then(|m| m.as_str())
            .unwrap_or(&desc.media_type)
            .to_string();
        let mut tags = Vec::new();
        if let Some(ann) = &desc.annotations {
            let name = ann
                .get(ANNOTATION_IMAGE_NAME)
                .or_else(|| ann.get(ANNOTATION_REF_NAME));
            if let Some(r) = name
                .and_then(|n| Reference::parse_named(n).ok())
                .filter(|r| r.tag().is_some())
            {
                tags.push(r);
            }
        }
        if media_type == MEDIA_TYPE_INDEX
            || media_type == MEDIA_TYPE_DOCKER_LIST
            || value.get("manifests").is_some()
        {
            let index: Index = parse_json(&path, &bytes)?;
            let (os, arch) = host_platform();
            let pick = index
                .manifests
                .iter()
                .filter(|m| {
                    m.platform
                        .as_ref()
                        .is_some_and(|p| p.os == os && p.architecture == arch)
                })
                .chain(index.manifests.iter())
                .find(|m| {
                    files
                        .blob(&format!("blobs/sha256/{}", m.digest.hex()))
                        .is_ok()
                });
            return match pick {
                Some(m) => Ok(self.oci_candidate(files, m, depth + 1)?.map(|mut c| {
                    c.tags.extend(tags);
                    c
                })),
                None => Ok(None),
            };
        }
        if media_type != MEDIA_TYPE_MANIFEST && media_type != MEDIA_TYPE_DOCKER_MANIFEST {
            return Ok(None);
        }
        let m: OciManifest = parse_json(&path, &bytes)?;
        let config = files.blob(&format!("blobs/sha256/{}", m.config.digest.hex()))?;
        let layers = m
            .layers
            .iter()
            .map(|l| files.blob(&format!("blobs/sha256/{}", l.digest.hex())))
            .collect::<Result<Vec<_>>>()?;
        let layer_types = m.layers.iter().map(|l| l.media_type.clone()).collect();
        Ok(Some(Candidate {
            config,
            layers,
            tags,
            manifest: Some((digest, media_type, layer_types)),
        }))
    }

    fn unpack_candidate(&self, c: &Candidate) -> Result<ImageRecord> {
        let config_bytes = self.content.read_to_vec(&c.config)?;
        let config = parse_config(&config_bytes, &c.config)?;
        let diff_ids = config
            .rootfs()
            .diff_ids()
            .iter()
            .map(|d| Digest::parse(d))
            .collect::<Result<Vec<_>>>()
            .map_err(|e| bad(format!("config {}: {e}", c.config)))?;
        if diff_ids.len() != c.layers.len() {
            return Err(bad(format!(
                "config {} lists {} layers but the archive has {}",
                c.config,
                diff_ids.len(),
                c.layers.len()
            )));
        }
        let mut layers = Vec::new();
        let mut parent: Option<Digest> = None;
        for (i, (blob, diff_id)) in c.layers.iter().zip(&diff_ids).enumerate() {
            let unpacked = self.ensure_layer(parent.as_ref(), blob, diff_id)?;
            let media_type = match c.manifest.as_ref().and_then(|(_, _, types)| types.get(i)) {
                Some(t) if !t.is_empty() => t.clone(),
                _ => self.blob_compression(blob)?.layer_media_type().to_string(),
            };
            layers.push(LayerInfo {
                diff_id: diff_id.clone(),
                digest: blob.clone(),
                media_type,
                size: self.content.size(blob)?,
                unpacked_size: unpacked.unpacked_size,
            });
            parent = Some(unpacked.chain_id);
        }
        let (manifest_digest, manifest_type) = match &c.manifest {
            Some((d, t, _)) => (d.clone(), t.clone()),
            None => {
                let m = manifest_json(&c.config, config_bytes.len() as u64, &layers)?;
                (self.content.put_bytes(&m)?, MEDIA_TYPE_MANIFEST.to_string())
            }
        };
        Ok(self.image_record(
            c.config.clone(),
            manifest_digest,
            manifest_type,
            config,
            layers,
        ))
    }

    /// Turns a user's argument to `docker save` into a selector: an id (full, bare or
    /// prefix) saves the image untagged, `name:tag` that tag, a bare repository name every
    /// tag of it.
    pub fn selector(&self, s: &str) -> Result<ImageSelector> {
        if let Ok(r) = Reference::parse_named(s) {
            if r.tag().is_some() || r.digest().is_some() {
                self.resolve(s)?;
                return Ok(ImageSelector::Tagged(r));
            }
            if !self.repository_tags(&r)?.is_empty() {
                return Ok(ImageSelector::Repository(r));
            }
        }
        Ok(ImageSelector::Id(self.resolve(s)?.id))
    }

    fn repository_tags(&self, repo: &Reference) -> Result<Vec<(Reference, Digest)>> {
        let name = repo.name();
        Ok(self
            .meta
            .read(|tx| tx.names())?
            .into_iter()
            .filter_map(|(n, id)| Reference::parse(&n).ok().map(|r| (r, id)))
            .filter(|(r, _)| r.name() == name && r.tag().is_some())
            .collect())
    }

    /// Writes the selected images as a Docker 25+ `docker save` archive.
    pub fn save(&self, selectors: &[ImageSelector], writer: impl Write) -> Result<()> {
        let _guard = self.gc_lock.read().unwrap_or_else(|p| p.into_inner());
        let mut images: Vec<(ImageRecord, Vec<Reference>)> = Vec::new();
        let mut add = |rec: ImageRecord, tag: Option<Reference>| {
            let pos = match images.iter().position(|(r, _)| r.id == rec.id) {
                Some(p) => p,
                None => {
                    images.push((rec, Vec::new()));
                    images.len() - 1
                }
            };
            if let Some(t) = tag.filter(|t| t.tag().is_some()) {
                let t = Reference::parse_named(&format!(
                    "{}:{}",
                    t.name(),
                    t.tag().unwrap_or_default()
                ))
                .expect("a name and tag taken from a valid reference form a valid reference");
                if !images[pos].1.contains(&t) {
                    images[pos].1.push(t);
                }
            }
        };
        for sel in selectors {
            match sel {
                ImageSelector::Id(d) => add(self.image(d)?, None),
                ImageSelector::Tagged(r) => add(self.resolve(&r.to_string())?, Some(r.clone())),
                ImageSelector::Repository(r) => {
                    let tags = self.repository_tags(r)?;
                    if tags.is_empty() {
                        return Err(StoreError::ImageNotFound(r.familiar_name()));
                    }
                    for (t, id) in tags {
                        add(self.image(&id)?, Some(t));
                    }
                }
            }
        }
        self.write_archive(&images, writer)
    }

    fn write_archive(
        &self,
        images: &[(ImageRecord, Vec<Reference>)],
        writer: impl Write,
    ) -> Result<()> {
        let werr = |e: io::Error| StoreError::Io {
            context: "write image archive".to_string(),
            source: e,
        };
        let mut b = tar::Builder::new(writer);
        for dir in ["blobs", "blobs/sha256"] {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o755);
            h.set_size(0);
            b.append_data(&mut h, dir, io::empty()).map_err(werr)?;
        }
        let mut written: HashSet<Digest> = HashSet::new();
        let mut index = Vec::new();
        let mut manifest = Vec::new();
        let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        for (rec, tags) in images {
            let blobs = rec
                .layers
                .iter()
                .map(|l| &l.digest)
                .chain([&rec.id, &rec.manifest_digest]);
            for d in blobs {
                if written.insert(d.clone()) {
                    let size = self.content.size(d)?;
                    let mut h = tar::Header::new_gnu();
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_mode(0o444);
                    h.set_size(size);
                    let file = self.content.read(d)?;
                    b.append_data(&mut h, format!("blobs/sha256/{}", d.hex()), file.take(size))
                        .map_err(werr)?;
                }
            }
            let manifest_size = self.content.size(&rec.manifest_digest)?;
            let desc = |annotations| Descriptor {
                media_type: rec.manifest_media_type.clone(),
                digest: rec.manifest_digest.clone(),
                size: manifest_size,
                annotations,
                platform: None,
            };
            if tags.is_empty() {
                index.push(desc(None));
            }
            for t in tags {
                let ann = BTreeMap::from([
                    (ANNOTATION_IMAGE_NAME.to_string(), t.to_string()),
                    (
                        ANNOTATION_REF_NAME.to_string(),
                        t.tag().unwrap_or_default().to_string(),
                    ),
                ]);
                index.push(desc(Some(ann)));
                if let Some(top) = rec.layers.last() {
                    repositories.entry(t.familiar_name()).or_default().insert(
                        t.tag().unwrap_or_default().to_string(),
                        top.digest.hex().to_string(),
                    );
                }
            }
            manifest.push(ManifestEntry {
                config: format!("blobs/sha256/{}", rec.id.hex()),
                repo_tags: if tags.is_empty() {
                    None
                } else {
                    Some(tags.iter().map(Reference::familiar_string).collect())
                },
                layers: rec
                    .layers
                    .iter()
                    .map(|l| format!("blobs/sha256/{}", l.digest.hex()))
                    .collect(),
            });
        }
        let index = Index {
            schema_version: 2,
            media_type: Some(MEDIA_TYPE_INDEX.to_string()),
            manifests: index,
        };
        let docs: [(&str, Vec<u8>); 4] = [
            ("index.json", enc("index.json", &index)?),
            ("manifest.json", enc("manifest.json", &manifest)?),
            ("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec()),
            ("repositories", enc("repositories", &repositories)?),
        ];
        for (name, bytes) in docs {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(0o644);
            h.set_size(bytes.len() as u64);
            b.append_data(&mut h, name, bytes.as_slice())
                .map_err(werr)?;
        }
        b.into_inner().map_err(werr)?.flush().map_err(werr)
    }
}

fn enc<T: Serialize>(what: &str, v: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| StoreError::json(format!("encode {what}"), e))
}
