//! What registries need from the store: compressed copies of layers made once and kept
//! for pushes ([`compressed`], with the push compressor in [`gzip`]), and pulled images
//! unpacked layer by layer while the rest still downloads ([`pulled`]).

pub mod compressed;
pub mod gzip;
pub mod pulled;

pub use compressed::{COMPRESSED_LAYER_KIND, CompressedLayer, is_uncompressed};
pub use gzip::{FAST_LEVEL, GzipStats, gzip};
pub use pulled::{PulledBlob, PulledLayer};

#[cfg(test)]
mod tests;
