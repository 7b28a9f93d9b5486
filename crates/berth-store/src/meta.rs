//! The metadata database: one redb file, `<root>/meta.redb`, holding every record of the
//! store so that each multi-step change (a new image with its names, a snapshot commit, a
//! removal) is one atomic write transaction.
//!
//! # Schema (version 2)
//!
//! | table       | key                                   | value                                          |
//! |-------------|---------------------------------------|------------------------------------------------|
//! | `meta`      | `&str`: `"schema_version"`            | `u64`: the schema version, currently `1`       |
//! |             | `&str`: `"next_snapshot_id"`          | `u64`: the next snapshot directory number      |
//! | `images`    | `&str`: image id = config digest `sha256:<hex>` | `&[u8]`: JSON [`ImageRecord`]        |
//! | `names`     | `&str`: full reference, e.g. `docker.io/library/busybox:latest` (or `name@sha256:…`) | `&str`: image id |
//! | `snapshots` | `&str`: snapshot name or key: a ChainID `sha256:<hex>` for committed layer snapshots, `extract-<rand>-<chainid>` while a layer is being applied, `container-<id>` for a container's writable layer | `&[u8]`: JSON [`SnapshotRecord`] `{id, kind: "committed"|"active"|"view", parent, created, size}` |
//! | `snapshot_children` | `(&str, &str)`: (parent key, child key) | `()`: an index of `snapshots` by parent, so that "is this snapshot a parent?" is one lookup |
//! | `records`   | `(&str, &str)`: (kind, id), e.g. `("container", "<64 hex>")` | `&[u8]`: opaque bytes owned by the caller (the daemon) |
//!
//! Record kinds the store itself reads: `build-cache` (id: a build step's cache key; value:
//! JSON [`crate::BuildCacheRecord`], whose layers garbage collection keeps). The daemon's
//! kinds are `container`, `container-networks`, `network`, `volume` and `build-result`.
//! A snapshot's files live in `<root>/snapshots/<id>/{fs,work}` where `<id>` is the
//! record's number. On open the `schema_version` key is created if missing and a newer
//! version is refused. Version 2 added `snapshot_children`; a version-1 database is
//! upgraded on open by indexing its snapshots. The index is maintained by
//! [`WriteTx::put_snapshot`] and [`WriteTx::delete_snapshot`], the only writers of
//! `snapshots`, so the two tables change in the same transactions.

use std::path::{Path, PathBuf};

use redb::{Database, ReadableTable, TableDefinition};

use crate::digest::Digest;
use crate::error::{Result, StoreError};
use crate::image::ImageRecord;
use crate::snapshot::SnapshotRecord;

/// The schema version this build writes and understands.
pub const SCHEMA_VERSION: u64 = 2;

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const IMAGES: TableDefinition<&str, &[u8]> = TableDefinition::new("images");
const NAMES: TableDefinition<&str, &str> = TableDefinition::new("names");
const SNAPSHOTS: TableDefinition<&str, &[u8]> = TableDefinition::new("snapshots");
const SNAPSHOT_CHILDREN: TableDefinition<(&str, &str), ()> =
    TableDefinition::new("snapshot_children");
const RECORDS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("records");

const KEY_SCHEMA_VERSION: &str = "schema_version";
const KEY_NEXT_SNAPSHOT_ID: &str = "next_snapshot_id";

/// The open metadata database.
pub struct MetaDb {
    db: Database,
    path: PathBuf,
}

impl std::fmt::Debug for MetaDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetaDb").field("path", &self.path).finish()
    }
}

/// A read-only view of the database at one point in time.
pub struct ReadTx {
    txn: redb::ReadTransaction,
}

/// A write transaction; changes become visible atomically when the closure passed to
/// [`MetaDb::write`] returns `Ok`.
pub struct WriteTx<'a> {
    txn: &'a redb::WriteTransaction,
}

fn to_json<T: serde::Serialize>(what: &str, v: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| StoreError::json(format!("encode {what}"), e))
}

fn from_json<T: serde::de::DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::json(format!("decode {what}"), e))
}

/// The parent named by the stored snapshot record `bytes` of `key`.
fn parent_of(key: &str, bytes: &[u8]) -> Result<Option<String>> {
    let rec: SnapshotRecord = from_json(&format!("snapshot record {key}"), bytes)?;
    Ok(rec.parent)
}

/// Read accessors shared by [`ReadTx`] and [`WriteTx`]; both open the same tables.
macro_rules! read_methods {
    () => {
        /// The image record with this id.
        pub fn get_image(&self, id: &Digest) -> Result<Option<ImageRecord>> {
            let t = self.txn.open_table(IMAGES)?;
            let v = t.get(id.as_str())?;
            v.map(|g| from_json(&format!("image record {id}"), g.value()))
                .transpose()
        }

        /// Every image record.
        pub fn images(&self) -> Result<Vec<ImageRecord>> {
            let t = self.txn.open_table(IMAGES)?;
            let mut out = Vec::new();
            for row in t.iter()? {
                let (k, v) = row?;
                out.push(from_json(
                    &format!("image record {}", k.value()),
                    v.value(),
                )?);
            }
            Ok(out)
        }

        /// The image id a full reference string points to.
        pub fn get_name(&self, name: &str) -> Result<Option<Digest>> {
            let t = self.txn.open_table(NAMES)?;
            let v = t.get(name)?;
            v.map(|g| Digest::parse(g.value())).transpose()
        }

        /// Every (full reference string, image id) pair.
        pub fn names(&self) -> Result<Vec<(String, Digest)>> {
            let t = self.txn.open_table(NAMES)?;
            let mut out = Vec::new();
            for row in t.iter()? {
                let (k, v) = row?;
                out.push((k.value().to_string(), Digest::parse(v.value())?));
            }
            Ok(out)
        }

        /// The snapshot record with this key or name.
        pub fn get_snapshot(&self, key: &str) -> Result<Option<SnapshotRecord>> {
            let t = self.txn.open_table(SNAPSHOTS)?;
            let v = t.get(key)?;
            v.map(|g| from_json(&format!("snapshot record {key}"), g.value()))
                .transpose()
        }

        /// Whether any snapshot has `key` as its parent.
        pub fn has_children(&self, key: &str) -> Result<bool> {
            let t = self.txn.open_table(SNAPSHOT_CHILDREN)?;
            let mut after = t.range((key, "")..)?;
            Ok(match after.next() {
                Some(row) => row?.0.value().0 == key,
                None => false,
            })
        }

        /// Every (key, snapshot record) pair.
        pub fn snapshots(&self) -> Result<Vec<(String, SnapshotRecord)>> {
            let t = self.txn.open_table(SNAPSHOTS)?;
            let mut out = Vec::new();
            for row in t.iter()? {
                let (k, v) = row?;
                let key = k.value().to_string();
                let rec = from_json(&format!("snapshot record {key}"), v.value())?;
                out.push((key, rec));
            }
            Ok(out)
        }

        /// A caller-owned record.
        pub fn get_record(&self, kind: &str, id: &str) -> Result<Option<Vec<u8>>> {
            let t = self.txn.open_table(RECORDS)?;
            let v = t.get((kind, id))?;
            Ok(v.map(|g| g.value().to_vec()))
        }

        /// Every caller-owned record of `kind`, ordered by id.
        pub fn records(&self, kind: &str) -> Result<Vec<(String, Vec<u8>)>> {
            let t = self.txn.open_table(RECORDS)?;
            let mut out = Vec::new();
            for row in t.range((kind, "")..)? {
                let (k, v) = row?;
                let (k_kind, k_id) = k.value();
                if k_kind != kind {
                    break;
                }
                out.push((k_id.to_string(), v.value().to_vec()));
            }
            Ok(out)
        }
    };
}

impl ReadTx {
    read_methods!();
}

impl WriteTx<'_> {
    read_methods!();

    /// Inserts or replaces an image record.
    pub fn put_image(&self, rec: &ImageRecord) -> Result<()> {
        let bytes = to_json("image record", rec)?;
        self.txn
            .open_table(IMAGES)?
            .insert(rec.id.as_str(), bytes.as_slice())?;
        Ok(())
    }

    /// Removes an image record; returns whether it existed.
    pub fn delete_image(&self, id: &Digest) -> Result<bool> {
        Ok(self.txn.open_table(IMAGES)?.remove(id.as_str())?.is_some())
    }

    /// Points a full reference string at an image id, returning the previous image.
    pub fn put_name(&self, name: &str, id: &Digest) -> Result<Option<Digest>> {
        let mut t = self.txn.open_table(NAMES)?;
        let old = t.insert(name, id.as_str())?;
        old.map(|g| Digest::parse(g.value())).transpose()
    }

    /// Removes a name, returning the image it pointed to.
    pub fn delete_name(&self, name: &str) -> Result<Option<Digest>> {
        let mut t = self.txn.open_table(NAMES)?;
        let old = t.remove(name)?;
        old.map(|g| Digest::parse(g.value())).transpose()
    }

    /// Inserts or replaces a snapshot record, keeping the parent index in step.
    pub fn put_snapshot(&self, key: &str, rec: &SnapshotRecord) -> Result<()> {
        let bytes = to_json("snapshot record", rec)?;
        let old_parent = {
            let mut t = self.txn.open_table(SNAPSHOTS)?;
            let old = t.insert(key, bytes.as_slice())?;
            old.map(|g| parent_of(key, g.value()))
                .transpose()?
                .flatten()
        };
        let mut index = self.txn.open_table(SNAPSHOT_CHILDREN)?;
        if let Some(old) = old_parent.as_deref()
            && rec.parent.as_deref() != Some(old)
        {
            index.remove((old, key))?;
        }
        if let Some(parent) = rec.parent.as_deref() {
            index.insert((parent, key), ())?;
        }
        Ok(())
    }

    /// Removes a snapshot record and its entry in the parent index.
    pub fn delete_snapshot(&self, key: &str) -> Result<()> {
        let old_parent = {
            let mut t = self.txn.open_table(SNAPSHOTS)?;
            let old = t.remove(key)?;
            old.map(|g| parent_of(key, g.value()))
                .transpose()?
                .flatten()
        };
        if let Some(parent) = old_parent.as_deref() {
            self.txn
                .open_table(SNAPSHOT_CHILDREN)?
                .remove((parent, key))?;
        }
        Ok(())
    }

    /// Allocates the next snapshot directory number.
    pub fn next_snapshot_id(&self) -> Result<u64> {
        let mut t = self.txn.open_table(META)?;
        let next = t.get(KEY_NEXT_SNAPSHOT_ID)?.map_or(1, |g| g.value());
        t.insert(KEY_NEXT_SNAPSHOT_ID, next + 1)?;
        Ok(next)
    }

    /// Inserts or replaces a caller-owned record.
    pub fn put_record(&self, kind: &str, id: &str, value: &[u8]) -> Result<()> {
        self.txn.open_table(RECORDS)?.insert((kind, id), value)?;
        Ok(())
    }

    /// Removes a caller-owned record; returns whether it existed.
    pub fn delete_record(&self, kind: &str, id: &str) -> Result<bool> {
        Ok(self.txn.open_table(RECORDS)?.remove((kind, id))?.is_some())
    }
}

impl MetaDb {
    /// Opens or creates the database at `path`, creating all tables and checking the schema version.
    pub fn open(path: &Path) -> Result<MetaDb> {
        let db = Database::create(path)
            .map_err(|e| StoreError::Meta(format!("open {}: {e}", path.display())))?;
        let meta = MetaDb {
            db,
            path: path.to_path_buf(),
        };
        meta.write(|tx| {
            let mut t = tx.txn.open_table(META)?;
            let found = t.get(KEY_SCHEMA_VERSION)?.map(|g| g.value());
            let upgrade_from = match found {
                Some(v) if v > SCHEMA_VERSION => {
                    return Err(StoreError::SchemaTooNew {
                        path: path.to_path_buf(),
                        found: v,
                        supported: SCHEMA_VERSION,
                    });
                }
                Some(v) if v < SCHEMA_VERSION => Some(v),
                Some(_) => None,
                None => {
                    t.insert(KEY_SCHEMA_VERSION, SCHEMA_VERSION)?;
                    None
                }
            };
            drop(t);
            tx.txn.open_table(IMAGES)?;
            tx.txn.open_table(NAMES)?;
            tx.txn.open_table(SNAPSHOTS)?;
            tx.txn.open_table(SNAPSHOT_CHILDREN)?;
            tx.txn.open_table(RECORDS)?;
            if upgrade_from.is_some() {
                // Version 1 had no index of snapshots by parent.
                let mut index = tx.txn.open_table(SNAPSHOT_CHILDREN)?;
                for (key, rec) in tx.snapshots()? {
                    if let Some(parent) = rec.parent.as_deref() {
                        index.insert((parent, key.as_str()), ())?;
                    }
                }
                drop(index);
                tx.txn
                    .open_table(META)?
                    .insert(KEY_SCHEMA_VERSION, SCHEMA_VERSION)?;
            }
            Ok(())
        })?;
        Ok(meta)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on a consistent read-only snapshot of the database.
    pub fn read<T>(&self, f: impl FnOnce(&ReadTx) -> Result<T>) -> Result<T> {
        let tx = ReadTx {
            txn: self.db.begin_read()?,
        };
        f(&tx)
    }

    /// Runs `f` in a write transaction, committing if it returns `Ok` and aborting otherwise.
    pub fn write<T>(&self, f: impl FnOnce(&WriteTx) -> Result<T>) -> Result<T> {
        let txn = self.db.begin_write()?;
        let out = f(&WriteTx { txn: &txn });
        match out {
            Ok(v) => {
                txn.commit()?;
                Ok(v)
            }
            Err(e) => {
                txn.abort()?;
                Err(e)
            }
        }
    }

    /// Stores a caller-owned record (the daemon's container records, for instance).
    pub fn put_record(&self, kind: &str, id: &str, value: &[u8]) -> Result<()> {
        self.write(|tx| tx.put_record(kind, id, value))
    }

    /// Reads a caller-owned record.
    pub fn get_record(&self, kind: &str, id: &str) -> Result<Option<Vec<u8>>> {
        self.read(|tx| tx.get_record(kind, id))
    }

    /// Removes a caller-owned record; returns whether it existed.
    pub fn delete_record(&self, kind: &str, id: &str) -> Result<bool> {
        self.write(|tx| tx.delete_record(kind, id))
    }

    /// Lists caller-owned records of `kind` as (id, bytes), ordered by id.
    pub fn list_records(&self, kind: &str) -> Result<Vec<(String, Vec<u8>)>> {
        self.read(|tx| tx.records(kind))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_roundtrip_and_kinds_are_separate() {
        let dir = tempfile::tempdir().unwrap();
        let db = MetaDb::open(&dir.path().join("meta.redb")).unwrap();
        db.put_record("container", "b", b"2").unwrap();
        db.put_record("container", "a", b"1").unwrap();
        db.put_record("volume", "a", b"v").unwrap();
        db.put_record("c", "z", b"x").unwrap();
        assert_eq!(db.get_record("container", "a").unwrap().unwrap(), b"1");
        let list = db.list_records("container").unwrap();
        assert_eq!(
            list,
            vec![
                ("a".to_string(), b"1".to_vec()),
                ("b".to_string(), b"2".to_vec())
            ]
        );
        assert!(db.delete_record("container", "a").unwrap());
        assert!(!db.delete_record("container", "a").unwrap());
        assert_eq!(db.list_records("container").unwrap().len(), 1);
        assert_eq!(db.list_records("volume").unwrap().len(), 1);
    }

    #[test]
    fn failed_write_is_rolled_back() {
        let dir = tempfile::tempdir().unwrap();
        let db = MetaDb::open(&dir.path().join("meta.redb")).unwrap();
        let r: Result<()> = db.write(|tx| {
            tx.put_record("k", "1", b"x")?;
            Err(StoreError::Meta("boom".into()))
        });
        assert!(r.is_err());
        assert!(db.get_record("k", "1").unwrap().is_none());
    }

    fn snapshot(id: u64, parent: Option<&str>) -> SnapshotRecord {
        SnapshotRecord {
            id,
            kind: crate::snapshot::SnapshotKind::Committed,
            parent: parent.map(str::to_string),
            created: chrono::Utc::now(),
            size: None,
        }
    }

    #[test]
    fn parent_index_follows_snapshot_writes() {
        let dir = tempfile::tempdir().unwrap();
        let db = MetaDb::open(&dir.path().join("meta.redb")).unwrap();
        let children = |key: &str| db.read(|tx| tx.has_children(key)).unwrap();
        db.write(|tx| {
            tx.put_snapshot("a", &snapshot(1, None))?;
            tx.put_snapshot("ab", &snapshot(2, Some("a")))?;
            tx.put_snapshot("b", &snapshot(3, None))
        })
        .unwrap();
        assert!(children("a"));
        // A key that sorts right after "a" must not count as its child.
        assert!(!children("ab"));
        assert!(!children("b"));
        // Re-parenting moves the index entry.
        db.write(|tx| tx.put_snapshot("ab", &snapshot(2, Some("b"))))
            .unwrap();
        assert!(!children("a"));
        assert!(children("b"));
        db.write(|tx| tx.delete_snapshot("ab")).unwrap();
        assert!(!children("b"));
        // A rolled-back transaction leaves the index as it was.
        let r: Result<()> = db.write(|tx| {
            tx.put_snapshot("c", &snapshot(4, Some("a")))?;
            Err(StoreError::Meta("boom".into()))
        });
        assert!(r.is_err());
        assert!(!children("a"));
    }

    #[test]
    fn version_one_database_gets_the_parent_index() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.redb");
        {
            let db = MetaDb::open(&path).unwrap();
            db.write(|tx| {
                tx.put_snapshot("base", &snapshot(1, None))?;
                tx.put_snapshot("top", &snapshot(2, Some("base")))?;
                // What a version-1 database looks like: no index, version 1.
                tx.txn.delete_table(SNAPSHOT_CHILDREN)?;
                tx.txn.open_table(META)?.insert(KEY_SCHEMA_VERSION, 1)?;
                Ok(())
            })
            .unwrap();
        }
        let db = MetaDb::open(&path).unwrap();
        assert!(db.read(|tx| tx.has_children("base")).unwrap());
        assert!(!db.read(|tx| tx.has_children("top")).unwrap());
        let version = db
            .read(|tx| {
                Ok(tx
                    .txn
                    .open_table(META)?
                    .get(KEY_SCHEMA_VERSION)?
                    .map(|g| g.value()))
            })
            .unwrap();
        assert_eq!(version, Some(SCHEMA_VERSION));
    }

    #[test]
    fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.redb");
        {
            let db = MetaDb::open(&path).unwrap();
            db.write(|tx| {
                tx.txn
                    .open_table(META)?
                    .insert(KEY_SCHEMA_VERSION, SCHEMA_VERSION + 1)?;
                Ok(())
            })
            .unwrap();
        }
        assert!(matches!(
            MetaDb::open(&path),
            Err(StoreError::SchemaTooNew { .. })
        ));
    }
}
