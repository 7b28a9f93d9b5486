//! gzip for pushes: deflate at flate2's fastest real level (1), switching to stored
//! (uncompressed) blocks while the input does not compress.
//!
//! Why adaptive: zlib-rs' level 1 is zlib-ng's `deflate_quick`, which always emits static
//! Huffman blocks; on incompressible data (compressed files, random test layers) it makes
//! the output ~5 % *larger* than the input, runs at a third of the speed of copying, and
//! the puller pays a slow inflate for nothing. So every 1 MiB segment is sync-flushed (a
//! 5-byte marker that leaves the stream byte-aligned) and measured: a segment that shrank
//! by less than 3 % makes the next 8 MiB go out as stored blocks, written here directly;
//! then the compressor starts afresh (reset: it must not refer back across bytes it did
//! not see) and is measured again, the stored run doubling up to 64 MiB while the data
//! stays incompressible (so random data costs ~0.1 % over its size). The output depends only on the input, so the same layer
//! always compresses to the same digest. (flate2's `set_level` cannot be used mid-stream
//! with zlib-rs: it flushes with a null output buffer and fails.)

use std::io::{self, Read, Write};

use flate2::{Compress, Compression, Crc, FlushCompress, Status};

/// The deflate level used while the data compresses.
pub const FAST_LEVEL: u32 = 1;
/// Input bytes per measured segment.
const SEGMENT: usize = 1 << 20;
/// Segments written as stored blocks before compression is tried again; the run doubles
/// (up to [`MAX_STORED_RUN`]) while the probes keep failing.
const STORED_RUN: u32 = 8;
/// The longest run of stored segments between two probes.
const MAX_STORED_RUN: u32 = 64;
/// A segment that compresses to at least this per-cent of its size counts as incompressible.
const INCOMPRESSIBLE_PERCENT: u64 = 97;
/// The largest stored block deflate allows.
const MAX_STORED_BLOCK: usize = 65535;

/// gzip header: no name, no mtime (reproducible), OS "unknown" (255) like Go's writer.
const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];

/// What [`gzip`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GzipStats {
    /// Bytes read.
    pub input: u64,
    /// Bytes written (header and trailer included).
    pub output: u64,
}

/// Compresses all of `reader` into `out` as one gzip member.
pub fn gzip(reader: &mut dyn Read, out: &mut dyn Write) -> io::Result<GzipStats> {
    let mut deflate = Compress::new(Compression::new(FAST_LEVEL), false);
    let mut stored_left = 0;
    let mut stored_run = STORED_RUN;
    let mut crc = Crc::new();
    let mut input = vec![0u8; SEGMENT];
    // Room for a whole segment plus block headers, so one call usually drains a segment.
    let mut output = Vec::with_capacity(SEGMENT + SEGMENT / 16 + 64);
    out.write_all(&HEADER)?;
    let mut written = HEADER.len() as u64;
    let mut read = 0u64;
    loop {
        let n = read_full(reader, &mut input)?;
        read += n as u64;
        let last = n < SEGMENT;
        let segment = &input[..n];
        crc.update(segment);
        if stored_left > 0 {
            written += write_stored(out, segment, last)?;
            stored_left -= 1;
            if stored_left == 0 {
                deflate.reset();
            }
        } else {
            let flush = if last {
                FlushCompress::Finish
            } else {
                FlushCompress::Sync
            };
            let produced = deflate_all(&mut deflate, segment, flush, &mut output, out)?;
            written += produced;
            if produced * 100 >= n as u64 * INCOMPRESSIBLE_PERCENT {
                stored_left = stored_run;
                stored_run = (stored_run * 2).min(MAX_STORED_RUN);
            } else {
                stored_run = STORED_RUN;
            }
        }
        if last {
            break;
        }
    }
    out.write_all(&crc.sum().to_le_bytes())?;
    out.write_all(&crc.amount().to_le_bytes())?;
    written += 8;
    Ok(GzipStats {
        input: read,
        output: written,
    })
}

/// Writes `data` as stored deflate blocks (the stream is byte-aligned here), the last one
/// final if `last`; returns the bytes written.
fn write_stored(out: &mut dyn Write, data: &[u8], last: bool) -> io::Result<u64> {
    let mut written = 0;
    let mut chunks = data.chunks(MAX_STORED_BLOCK).peekable();
    if chunks.peek().is_none() {
        // Nothing left but the end of the stream: an empty final block.
        if last {
            out.write_all(&[1, 0, 0, 0xff, 0xff])?;
            written += 5;
        }
        return Ok(written);
    }
    while let Some(chunk) = chunks.next() {
        let is_final = last && chunks.peek().is_none();
        let len = chunk.len() as u16;
        let nlen = !len;
        let head = [
            u8::from(is_final),
            len as u8,
            (len >> 8) as u8,
            nlen as u8,
            (nlen >> 8) as u8,
        ];
        out.write_all(&head)?;
        out.write_all(chunk)?;
        written += (head.len() + chunk.len()) as u64;
    }
    Ok(written)
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
fn read_full(reader: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Feeds `input` through `deflate` with `flush`, writing everything produced to `out`;
/// returns the bytes produced.
fn deflate_all(
    deflate: &mut Compress,
    mut input: &[u8],
    flush: FlushCompress,
    buf: &mut Vec<u8>,
    out: &mut dyn Write,
) -> io::Result<u64> {
    let mut produced = 0;
    loop {
        buf.clear();
        let before = deflate.total_in();
        let status = deflate
            .compress_vec(input, buf, flush)
            .map_err(io::Error::other)?;
        input = &input[(deflate.total_in() - before) as usize..];
        out.write_all(buf)?;
        produced += buf.len() as u64;
        // Done when the stream ended (Finish) or, for a sync flush, when all input is in
        // and the compressor stopped short of filling the buffer.
        let drained = input.is_empty() && buf.len() < buf.capacity();
        match status {
            Status::StreamEnd => return Ok(produced),
            _ if drained && !matches!(flush, FlushCompress::Finish) => return Ok(produced),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::read::MultiGzDecoder;

    fn roundtrip(data: &[u8]) -> Vec<u8> {
        let mut gz = Vec::new();
        let stats = gzip(&mut &data[..], &mut gz).unwrap();
        assert_eq!(stats.input, data.len() as u64);
        assert_eq!(stats.output, gz.len() as u64);
        let mut back = Vec::new();
        MultiGzDecoder::new(&gz[..]).read_to_end(&mut back).unwrap();
        assert_eq!(back, data, "gzip round trip of {} bytes", data.len());
        gz
    }

    fn noise(len: usize, seed: u64) -> Vec<u8> {
        // xorshift: incompressible enough for deflate, reproducible.
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    #[test]
    fn round_trips_small_empty_and_segment_sized_inputs() {
        roundtrip(b"");
        roundtrip(b"hello");
        roundtrip(&vec![7u8; SEGMENT]);
        roundtrip(&vec![7u8; 2 * SEGMENT + 5]);
    }

    #[test]
    fn compressible_data_shrinks_and_output_is_reproducible() {
        let text: Vec<u8> = (0..3 * SEGMENT).map(|i| b"layer data "[i % 11]).collect();
        let a = roundtrip(&text);
        assert!(a.len() < text.len() / 20, "{} of {}", a.len(), text.len());
        assert_eq!(a, roundtrip(&text), "same input, same bytes");
    }

    #[test]
    fn incompressible_data_grows_by_less_than_one_percent() {
        // Probes at segments 0 and 9 (each ~5 % over), stored blocks elsewhere.
        let data = noise(12 * SEGMENT + 123, 42);
        let gz = roundtrip(&data);
        let overhead = gz.len() as f64 / data.len() as f64 - 1.0;
        assert!(overhead < 0.01, "overhead {overhead}");
    }

    #[test]
    fn mixed_data_compresses_the_compressible_parts() {
        let mut data = noise(3 * SEGMENT, 7);
        data.extend(std::iter::repeat_n(b'a', 20 * SEGMENT));
        let gz = roundtrip(&data);
        // The first noise segment switches to stored blocks for 8 MiB (2 of noise, 6 of
        // 'a'); the probe after that finds the 'a's compressible again, and the last 14
        // MiB nearly disappear.
        assert!(gz.len() < 10 * SEGMENT, "{}", gz.len());
    }
}
