//! Layers: applying layer tars into snapshot directories ([`apply_layer`]), producing tars
//! from overlay upper directories and whole root filesystems ([`diff_tar`], [`tar_dir`]),
//! and the OCI DiffID/ChainID arithmetic ([`chain_id`]).
//!
//! Layer directories are used as overlay lower directories, so Docker's `.wh.` whiteout
//! files become overlay whiteouts (character device 0/0) and opaque markers become the
//! `trusted.overlay.opaque=y` xattr; [`diff_tar`] converts them back.

mod apply;
mod export;

use std::io::{BufRead, BufReader, Read};

pub use apply::{ApplyStats, apply_layer, apply_layer_with_parents};
pub use export::{DiffOptions, diff_tar, diff_tar_with, tar_dir};

use crate::digest::Digest;
use crate::error::{Result, StoreError};

/// Media type of an uncompressed OCI layer.
pub const MEDIA_TYPE_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
/// Media type of a gzip-compressed OCI layer.
pub const MEDIA_TYPE_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// Media type of a zstd-compressed OCI layer.
pub const MEDIA_TYPE_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// The compression a layer stream uses, detected from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar.
    None,
    /// gzip.
    Gzip,
    /// zstd.
    Zstd,
}

impl Compression {
    /// The OCI layer media type for this compression.
    pub fn layer_media_type(self) -> &'static str {
        match self {
            Compression::None => MEDIA_TYPE_LAYER_TAR,
            Compression::Gzip => MEDIA_TYPE_LAYER_GZIP,
            Compression::Zstd => MEDIA_TYPE_LAYER_ZSTD,
        }
    }
}

/// Detects the compression of `reader` from its magic bytes without consuming them.
pub fn detect_compression<R: Read>(reader: &mut BufReader<R>) -> Result<Compression> {
    let head = reader
        .fill_buf()
        .map_err(|e| StoreError::InvalidLayer(format!("read layer: {e}")))?;
    if head.starts_with(&GZIP_MAGIC) {
        Ok(Compression::Gzip)
    } else if head.starts_with(&ZSTD_MAGIC) {
        Ok(Compression::Zstd)
    } else {
        Ok(Compression::None)
    }
}

/// Wraps `reader` so that it yields the uncompressed tar stream, whatever the compression.
pub fn decompress<'a, R: Read + 'a>(reader: R) -> Result<(Compression, Box<dyn Read + 'a>)> {
    let mut br = BufReader::with_capacity(128 * 1024, reader);
    let c = detect_compression(&mut br)?;
    Ok(match c {
        Compression::None => (c, Box::new(br)),
        Compression::Gzip => (c, Box::new(flate2::bufread::MultiGzDecoder::new(br))),
        Compression::Zstd => {
            let decoder = zstd::stream::read::Decoder::with_buffer(br)
                .map_err(|e| StoreError::InvalidLayer(format!("zstd stream: {e}")))?;
            (c, Box::new(decoder))
        }
    })
}

/// The ChainIDs of a layer stack per the OCI image spec: `chain[0] = diff[0]`,
/// `chain[i] = sha256(chain[i-1] + " " + diff[i])`.
pub fn chain_id(diff_ids: &[Digest]) -> Vec<Digest> {
    let mut out: Vec<Digest> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(prev) => Digest::from_bytes(format!("{prev} {d}").as_bytes()),
        };
        out.push(next);
    }
    out
}

#[cfg(test)]
mod tests;
