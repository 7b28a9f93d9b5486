//! The local content store: immutable blobs addressed by digest under
//! `<root>/content/blobs/sha256/<hex>`, written through ingests in `<root>/content/ingest/`.
//!
//! A blob only becomes visible under `blobs/` after its ingest has been fsynced, hashed,
//! checked against the expected digest and size, and renamed into place, so nothing
//! unverified is ever readable by digest. Ingests left over by a crash are removed on open.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::digest::{Digest, Hashing};
use crate::error::{IoContext, Result, StoreError};

/// Blobs by digest on the local filesystem.
#[derive(Debug, Clone)]
pub struct ContentStore {
    blobs: PathBuf,
    ingest: PathBuf,
}

/// An in-progress write of one blob; hashes while writing. Dropping it without
/// [`Ingest::commit`] deletes the temporary file.
pub struct Ingest {
    file: Option<Hashing<BufWriter<File>>>,
    path: PathBuf,
    blobs: PathBuf,
}

impl ContentStore {
    /// Opens (creating if needed) the content store under `<root>/content`, removing stale ingests.
    pub fn open(root: &Path) -> Result<ContentStore> {
        let base = root.join("content");
        let blobs = base.join("blobs").join("sha256");
        let ingest = base.join("ingest");
        fs::create_dir_all(&blobs).ctx("create directory", &blobs)?;
        if ingest.exists() {
            fs::remove_dir_all(&ingest).ctx("remove stale ingests", &ingest)?;
        }
        fs::create_dir_all(&ingest).ctx("create directory", &ingest)?;
        Ok(ContentStore { blobs, ingest })
    }

    /// Starts writing a new blob.
    pub fn writer(&self) -> Result<Ingest> {
        let path = self.ingest.join(random_name("ingest"));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .ctx("create ingest", &path)?;
        Ok(Ingest {
            file: Some(Hashing::new(BufWriter::new(file))),
            path,
            blobs: self.blobs.clone(),
        })
    }

    /// Stores `bytes` and returns their digest.
    pub fn put_bytes(&self, bytes: &[u8]) -> Result<Digest> {
        let mut w = self.writer()?;
        w.write_all(bytes).ctx("write ingest", &w.path)?;
        w.commit(None, Some(bytes.len() as u64))
    }

    /// Copies everything from `reader` into a new blob.
    pub fn put_reader(&self, reader: &mut dyn Read, expected: Option<&Digest>) -> Result<Digest> {
        let mut w = self.writer()?;
        io::copy(reader, &mut w).ctx("write ingest", &w.path)?;
        w.commit(expected, None)
    }

    /// The path a blob has (whether or not it exists).
    pub fn path(&self, digest: &Digest) -> PathBuf {
        self.blobs.join(digest.hex())
    }

    /// Opens a blob for reading.
    pub fn read(&self, digest: &Digest) -> Result<File> {
        let path = self.path(digest);
        File::open(&path).map_err(|e| not_found_or(e, digest, &path))
    }

    /// Reads a whole blob into memory.
    pub fn read_to_vec(&self, digest: &Digest) -> Result<Vec<u8>> {
        let path = self.path(digest);
        fs::read(&path).map_err(|e| not_found_or(e, digest, &path))
    }

    /// Whether a blob is present.
    pub fn exists(&self, digest: &Digest) -> bool {
        self.path(digest).is_file()
    }

    /// The size of a blob in bytes.
    pub fn size(&self, digest: &Digest) -> Result<u64> {
        let path = self.path(digest);
        fs::metadata(&path)
            .map(|m| m.len())
            .map_err(|e| not_found_or(e, digest, &path))
    }

    /// Deletes a blob; deleting a missing blob is not an error.
    pub fn delete(&self, digest: &Digest) -> Result<()> {
        let path = self.path(digest);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                Err(StoreError::io("remove blob", &path, e))
            }
            _ => Ok(()),
        }
    }

    /// Every blob in the store.
    pub fn list(&self) -> Result<Vec<Digest>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.blobs).ctx("read directory", &self.blobs)? {
            let entry = entry.ctx("read directory", &self.blobs)?;
            if let Some(d) = entry
                .file_name()
                .to_str()
                .and_then(|n| Digest::from_hex(n).ok())
            {
                out.push(d);
            }
        }
        out.sort();
        Ok(out)
    }
}

fn not_found_or(e: io::Error, digest: &Digest, path: &Path) -> StoreError {
    if e.kind() == io::ErrorKind::NotFound {
        StoreError::BlobNotFound(digest.clone())
    } else {
        StoreError::io("read blob", path, e)
    }
}

/// A unique file name: `<prefix>-<16 random hex>`.
pub(crate) fn random_name(prefix: &str) -> String {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        // The kernel RNG failing is close to impossible; fall back to time and pid so names
        // stay unique within this process.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        bytes = ((nanos as u64) ^ u64::from(std::process::id())).to_le_bytes();
    }
    format!("{prefix}-{}", hex::encode(bytes))
}

/// Fsyncs a directory so a rename inside it is durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .ctx("sync directory", dir)
}

impl Ingest {
    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.file.as_ref().map_or(0, |f| f.count())
    }

    /// Finishes the blob: flushes and fsyncs, checks digest and size if given, and moves it
    /// under `blobs/` read-only. A blob that already exists is kept and its digest returned.
    pub fn commit(
        mut self,
        expected_digest: Option<&Digest>,
        expected_size: Option<u64>,
    ) -> Result<Digest> {
        let hashing = self
            .file
            .take()
            .expect("ingest file is present until commit");
        let (digest, size, buf) = hashing.finish();
        let file = buf
            .into_inner()
            .map_err(|e| StoreError::io("flush ingest", &self.path, e.into_error()))?;
        file.sync_all().ctx("sync ingest", &self.path)?;
        drop(file);
        if let Some(expected) = expected_digest
            && *expected != digest
        {
            return Err(StoreError::DigestMismatch {
                expected: expected.clone(),
                actual: digest,
            });
        }
        if let Some(expected) = expected_size
            && expected != size
        {
            return Err(StoreError::SizeMismatch {
                digest,
                expected,
                actual: size,
            });
        }
        let target = self.blobs.join(digest.hex());
        if target.exists() {
            return Ok(digest);
        }
        fs::set_permissions(&self.path, fs::Permissions::from_mode(0o444))
            .ctx("chmod ingest", &self.path)?;
        fs::rename(&self.path, &target).ctx("rename ingest into", &target)?;
        sync_dir(&self.blobs)?;
        Ok(digest)
    }
}

impl Write for Ingest {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file
            .as_mut()
            .expect("ingest file is present until commit")
            .write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file
            .as_mut()
            .expect("ingest file is present until commit")
            .flush()
    }
}

impl Drop for Ingest {
    fn drop(&mut self) {
        // After a successful commit the file was renamed away and this is a no-op.
        let _ = fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_verify_read_delete() {
        let dir = tempfile::tempdir().unwrap();
        let cs = ContentStore::open(dir.path()).unwrap();
        let d = cs.put_bytes(b"hello").unwrap();
        assert_eq!(d, Digest::from_bytes(b"hello"));
        assert!(cs.exists(&d));
        assert_eq!(cs.size(&d).unwrap(), 5);
        assert_eq!(cs.read_to_vec(&d).unwrap(), b"hello");
        assert_eq!(cs.list().unwrap(), vec![d.clone()]);
        // Writing the same content again is fine.
        assert_eq!(cs.put_bytes(b"hello").unwrap(), d);
        cs.delete(&d).unwrap();
        assert!(!cs.exists(&d));
        assert!(matches!(cs.read(&d), Err(StoreError::BlobNotFound(_))));
    }

    #[test]
    fn mismatch_is_rejected_and_invisible() {
        let dir = tempfile::tempdir().unwrap();
        let cs = ContentStore::open(dir.path()).unwrap();
        let wrong = Digest::from_bytes(b"other");
        let mut w = cs.writer().unwrap();
        w.write_all(b"hello").unwrap();
        assert!(matches!(
            w.commit(Some(&wrong), None),
            Err(StoreError::DigestMismatch { .. })
        ));
        let mut w = cs.writer().unwrap();
        w.write_all(b"hello").unwrap();
        assert!(matches!(
            w.commit(None, Some(4)),
            Err(StoreError::SizeMismatch { .. })
        ));
        assert!(cs.list().unwrap().is_empty());
        assert_eq!(
            fs::read_dir(dir.path().join("content/ingest"))
                .unwrap()
                .count(),
            0
        );
    }

    #[test]
    fn partial_ingest_is_cleaned_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let cs = ContentStore::open(dir.path()).unwrap();
        let mut w = cs.writer().unwrap();
        w.write_all(b"partial").unwrap();
        w.flush().unwrap();
        // Simulate a crash: the ingest file stays behind.
        std::mem::forget(w);
        assert_eq!(
            fs::read_dir(dir.path().join("content/ingest"))
                .unwrap()
                .count(),
            1
        );
        let cs = ContentStore::open(dir.path()).unwrap();
        assert_eq!(
            fs::read_dir(dir.path().join("content/ingest"))
                .unwrap()
                .count(),
            0
        );
        assert!(cs.list().unwrap().is_empty());
    }
}
