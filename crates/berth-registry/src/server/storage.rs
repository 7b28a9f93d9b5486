//! The registry's filesystem storage: one global blob store by digest (berth-store's
//! [`ContentStore`], verified on commit) and, per repository, small link files saying what
//! the repository may see.
//!
//! ```text
//! <root>/content/blobs/sha256/<hex>                      every blob and manifest, once
//! <root>/content/ingest/                                  uploads in progress
//! <root>/repositories/<name>/_layers/<hex>                blob linked into the repository
//! <root>/repositories/<name>/_manifests/revisions/<hex>   manifest revision (content: media type)
//! <root>/repositories/<name>/_manifests/tags/<tag>        tag (content: manifest digest)
//! <root>/repositories/<name>/_referrers/<subject>/<hex>   referrer descriptor (JSON)
//! ```
//!
//! A repository only reads blobs it has linked; cross-repository mounts add a link. Every
//! file is written to a temporary name and renamed, so readers never see half a link.
//! All methods block.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use berth_store::{ContentStore, Digest, StoreError};

use crate::manifest::{Descriptor, Manifest};
use crate::routes::{ManifestRef, RepoName};

/// A storage failure, naming the path or digest involved.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// A filesystem operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was attempted.
        op: &'static str,
        /// On which path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The content store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

type Result<T> = std::result::Result<T, StorageError>;

trait Ctx<T> {
    fn ctx(self, op: &'static str, path: &Path) -> Result<T>;
}

impl<T> Ctx<T> for io::Result<T> {
    fn ctx(self, op: &'static str, path: &Path) -> Result<T> {
        self.map_err(|source| StorageError::Io {
            op,
            path: path.to_path_buf(),
            source,
        })
    }
}

/// What a garbage collection removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GcReport {
    /// Blobs deleted from the global store.
    pub blobs_deleted: usize,
    /// Bytes those blobs took.
    pub bytes_freed: u64,
    /// Untagged manifest revisions unlinked (only with `delete_untagged`).
    pub manifests_deleted: usize,
}

/// The registry's storage under one root directory.
#[derive(Debug, Clone)]
pub struct Storage {
    content: ContentStore,
    repos: PathBuf,
}

impl Storage {
    /// Opens (creating) the storage under `root`; stale upload files are removed.
    pub fn open(root: &Path) -> Result<Storage> {
        let content = ContentStore::open(root)?;
        let repos = root.join("repositories");
        fs::create_dir_all(&repos).ctx("create directory", &repos)?;
        Ok(Storage { content, repos })
    }

    /// The global blob store.
    pub fn content(&self) -> &ContentStore {
        &self.content
    }

    fn repo(&self, name: &RepoName) -> PathBuf {
        // RepoName validation guarantees plain components: no `..`, no leading `/`.
        self.repos.join(name.as_str())
    }

    fn layer_link(&self, name: &RepoName, digest: &Digest) -> PathBuf {
        self.repo(name).join("_layers").join(digest.hex())
    }

    fn revision_link(&self, name: &RepoName, digest: &Digest) -> PathBuf {
        self.repo(name)
            .join("_manifests/revisions")
            .join(digest.hex())
    }

    fn tag_link(&self, name: &RepoName, tag: &str) -> PathBuf {
        self.repo(name).join("_manifests/tags").join(tag)
    }

    /// Whether the repository has anything in it.
    pub fn repo_exists(&self, name: &RepoName) -> bool {
        let dir = self.repo(name);
        dir.join("_manifests").is_dir() || dir.join("_layers").is_dir()
    }

    /// Whether `name` may read blob `digest`: linked and present.
    pub fn blob_linked(&self, name: &RepoName, digest: &Digest) -> bool {
        self.layer_link(name, digest).is_file() && self.content.exists(digest)
    }

    /// Links an existing blob into a repository.
    pub fn link_blob(&self, name: &RepoName, digest: &Digest) -> Result<()> {
        write_atomic(&self.layer_link(name, digest), b"")
    }

    /// Removes a repository's link to a blob; `false` if it had none.
    pub fn unlink_blob(&self, name: &RepoName, digest: &Digest) -> Result<bool> {
        remove_if_exists(&self.layer_link(name, digest))
    }

    /// Records a manifest (already in the content store) as a revision of `name`, tags it,
    /// and registers it as a referrer of its subject.
    pub fn put_manifest(
        &self,
        name: &RepoName,
        digest: &Digest,
        media_type: &str,
        tag: Option<&str>,
        referrer: Option<(&Digest, &Descriptor)>,
    ) -> Result<()> {
        write_atomic(&self.revision_link(name, digest), media_type.as_bytes())?;
        if let Some((subject, descriptor)) = referrer {
            let path = self
                .repo(name)
                .join("_referrers")
                .join(subject.hex())
                .join(digest.hex());
            let json = serde_json::to_vec(descriptor).expect("descriptor serialises");
            write_atomic(&path, &json)?;
        }
        if let Some(tag) = tag {
            write_atomic(&self.tag_link(name, tag), digest.as_str().as_bytes())?;
        }
        Ok(())
    }

    /// The digest and media type a tag or digest resolves to in `name`.
    pub fn manifest(
        &self,
        name: &RepoName,
        reference: &ManifestRef,
    ) -> Result<Option<(Digest, String)>> {
        let digest = match reference {
            ManifestRef::Digest(d) => d.clone(),
            ManifestRef::Tag(t) => match read_opt(&self.tag_link(name, t))? {
                Some(s) => match Digest::parse(s.trim()) {
                    Ok(d) => d,
                    Err(_) => return Ok(None),
                },
                None => return Ok(None),
            },
        };
        if !self.content.exists(&digest) {
            return Ok(None);
        }
        Ok(read_opt(&self.revision_link(name, &digest))?.map(|mt| (digest, mt)))
    }

    /// Deletes a tag, or a revision with every tag and referrer entry pointing at it.
    /// `false` when there was nothing to delete.
    pub fn delete_manifest(&self, name: &RepoName, reference: &ManifestRef) -> Result<bool> {
        match reference {
            ManifestRef::Tag(t) => remove_if_exists(&self.tag_link(name, t)),
            ManifestRef::Digest(d) => {
                if !remove_if_exists(&self.revision_link(name, d))? {
                    return Ok(false);
                }
                for (tag, target) in self.tag_targets(name)? {
                    if target == *d {
                        remove_if_exists(&self.tag_link(name, &tag))?;
                    }
                }
                let referrers = self.repo(name).join("_referrers");
                for subject in list_dir(&referrers)? {
                    remove_if_exists(&referrers.join(subject).join(d.hex()))?;
                }
                Ok(true)
            }
        }
    }

    fn tag_targets(&self, name: &RepoName) -> Result<Vec<(String, Digest)>> {
        let dir = self.repo(name).join("_manifests/tags");
        let mut out = Vec::new();
        for tag in list_dir(&dir)? {
            if let Some(s) = read_opt(&dir.join(&tag))?
                && let Ok(d) = Digest::parse(s.trim())
            {
                out.push((tag, d));
            }
        }
        Ok(out)
    }

    /// The repository's tags, sorted; `None` if the repository does not exist.
    pub fn tags(&self, name: &RepoName) -> Result<Option<Vec<String>>> {
        if !self.repo_exists(name) {
            return Ok(None);
        }
        let mut tags: Vec<String> = self.tag_targets(name)?.into_iter().map(|t| t.0).collect();
        tags.sort();
        Ok(Some(tags))
    }

    /// Every repository name, sorted.
    pub fn repositories(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let mut stack = vec![(self.repos.clone(), String::new())];
        while let Some((dir, prefix)) = stack.pop() {
            for entry in list_dir(&dir)? {
                if entry.starts_with('_') {
                    continue;
                }
                let path = dir.join(&entry);
                if !path.is_dir() {
                    continue;
                }
                let name = if prefix.is_empty() {
                    entry
                } else {
                    format!("{prefix}/{entry}")
                };
                if path.join("_manifests").is_dir() || path.join("_layers").is_dir() {
                    out.push(name.clone());
                }
                stack.push((path, name));
            }
        }
        out.sort();
        Ok(out)
    }

    /// The descriptors of manifests in `name` whose subject is `subject`, sorted by digest.
    pub fn referrers(&self, name: &RepoName, subject: &Digest) -> Result<Vec<Descriptor>> {
        let dir = self.repo(name).join("_referrers").join(subject.hex());
        let mut out = Vec::new();
        for entry in list_dir(&dir)? {
            let path = dir.join(&entry);
            if let Some(json) = read_opt(&path)?
                && let Ok(d) = serde_json::from_str::<Descriptor>(&json)
                && self.revision_link(name, &d.digest).is_file()
            {
                out.push(d);
            }
        }
        out.sort_by(|a, b| a.digest.cmp(&b.digest));
        Ok(out)
    }

    /// Removes every blob no manifest revision refers to. With `delete_untagged`, revisions
    /// reachable from no tag (directly, through an index, or as a referrer of a kept
    /// manifest) are unlinked first. Must not run while the registry accepts pushes.
    pub fn gc(&self, delete_untagged: bool) -> Result<GcReport> {
        let mut report = GcReport::default();
        let mut marked: HashSet<Digest> = HashSet::new();
        for repo in self.repositories()? {
            let Ok(name) = RepoName::parse(&repo) else {
                continue;
            };
            let revisions_dir = self.repo(&name).join("_manifests/revisions");
            let revisions: BTreeSet<Digest> = list_dir(&revisions_dir)?
                .iter()
                .filter_map(|h| Digest::from_hex(h).ok())
                .collect();
            let mut parsed: HashMap<Digest, Manifest> = HashMap::new();
            for d in &revisions {
                if let Ok(bytes) = self.content.read_to_vec(d)
                    && let Ok((m, _)) = Manifest::parse(&bytes, "")
                {
                    parsed.insert(d.clone(), m);
                }
            }
            let roots: Vec<Digest> = if delete_untagged {
                self.tag_targets(&name)?.into_iter().map(|t| t.1).collect()
            } else {
                revisions.iter().cloned().collect()
            };
            let mut kept: HashSet<Digest> = HashSet::new();
            let mut work = roots;
            while let Some(d) = work.pop() {
                if !kept.insert(d.clone()) {
                    continue;
                }
                if let Some(m) = parsed.get(&d) {
                    work.extend(m.manifests.iter().map(|c| c.digest.clone()));
                }
                work.extend(self.referrers(&name, &d)?.into_iter().map(|r| r.digest));
            }
            for d in &revisions {
                if !kept.contains(d) {
                    self.delete_manifest(&name, &ManifestRef::Digest(d.clone()))?;
                    report.manifests_deleted += 1;
                    continue;
                }
                marked.insert(d.clone());
                if let Some(m) = parsed.get(d) {
                    marked.extend(m.blobs().into_iter().map(|b| b.digest.clone()));
                }
            }
        }
        for digest in self.content.list()? {
            if !marked.contains(&digest) {
                report.bytes_freed += self.content.size(&digest).unwrap_or(0);
                self.content.delete(&digest)?;
                report.blobs_deleted += 1;
            }
        }
        // Links to blobs that are gone would make HEAD say "exists" for nothing.
        for repo in self.repositories()? {
            let Ok(name) = RepoName::parse(&repo) else {
                continue;
            };
            let layers = self.repo(&name).join("_layers");
            for hex in list_dir(&layers)? {
                match Digest::from_hex(&hex) {
                    Ok(d) if self.content.exists(&d) => {}
                    _ => {
                        remove_if_exists(&layers.join(&hex))?;
                    }
                }
            }
        }
        Ok(report)
    }
}

/// Writes `data` to `path` through a temporary file and a rename, creating parents.
fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let dir = path.parent().expect("link paths have a parent");
    fs::create_dir_all(dir).ctx("create directory", dir)?;
    let mut rnd = [0u8; 8];
    getrandom::fill(&mut rnd).map_err(|e| StorageError::Io {
        op: "generate temporary name in",
        path: dir.to_path_buf(),
        source: io::Error::other(e.to_string()),
    })?;
    let tmp = dir.join(format!(".tmp-{}", hex::encode(rnd)));
    fs::write(&tmp, data).ctx("write", &tmp)?;
    fs::rename(&tmp, path).ctx("rename into", path)
}

fn read_opt(path: &Path) -> Result<Option<String>> {
    match fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).ctx("read", path),
    }
}

fn remove_if_exists(path: &Path) -> Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).ctx("remove", path),
    }
}

/// Names in a directory, without temporary files; a missing directory is empty.
fn list_dir(dir: &Path) -> Result<Vec<String>> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).ctx("read directory", dir),
    };
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry.ctx("read directory", dir)?;
        if let Some(name) = entry.file_name().to_str()
            && !name.starts_with(".tmp-")
        {
            out.push(name.to_string());
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::OCI_MANIFEST;

    fn name(s: &str) -> RepoName {
        RepoName::parse(s).unwrap()
    }

    fn manifest_for(config: &Digest, layer: &Digest) -> Vec<u8> {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"c","digest":"{config}","size":1}},"layers":[{{"mediaType":"l","digest":"{layer}","size":1}}]}}"#
        )
        .into_bytes()
    }

    #[test]
    fn links_tags_catalog_and_gc() {
        let dir = tempfile::tempdir().unwrap();
        let s = Storage::open(dir.path()).unwrap();
        let a = name("team/app");
        let b = name("other");
        let config = s.content().put_bytes(b"{}").unwrap();
        let layer = s.content().put_bytes(b"layer").unwrap();
        let orphan = s.content().put_bytes(b"orphan").unwrap();
        for d in [&config, &layer] {
            s.link_blob(&a, d).unwrap();
        }
        assert!(s.blob_linked(&a, &layer));
        assert!(!s.blob_linked(&b, &layer));
        let m = s
            .content()
            .put_bytes(&manifest_for(&config, &layer))
            .unwrap();
        s.put_manifest(&a, &m, OCI_MANIFEST, Some("v1"), None)
            .unwrap();
        assert_eq!(
            s.manifest(&a, &ManifestRef::Tag("v1".into())).unwrap(),
            Some((m.clone(), OCI_MANIFEST.to_string()))
        );
        assert_eq!(
            s.manifest(&b, &ManifestRef::Digest(m.clone())).unwrap(),
            None
        );
        s.link_blob(&b, &orphan).unwrap();
        assert_eq!(s.repositories().unwrap(), vec!["other", "team/app"]);
        assert_eq!(s.tags(&a).unwrap(), Some(vec!["v1".to_string()]));
        assert_eq!(s.tags(&name("nope")).unwrap(), None);

        let report = s.gc(false).unwrap();
        assert_eq!(report.blobs_deleted, 1);
        assert!(!s.content().exists(&orphan));
        assert!(!s.blob_linked(&b, &orphan));
        assert!(s.content().exists(&layer));

        // Untag, then gc with delete_untagged drops the revision and its blobs.
        assert!(
            s.delete_manifest(&a, &ManifestRef::Tag("v1".into()))
                .unwrap()
        );
        assert!(
            s.manifest(&a, &ManifestRef::Digest(m.clone()))
                .unwrap()
                .is_some()
        );
        let report = s.gc(true).unwrap();
        assert_eq!(report.manifests_deleted, 1);
        assert_eq!(report.blobs_deleted, 3);
        assert!(s.content().list().unwrap().is_empty());
    }
}
