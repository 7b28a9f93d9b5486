//! Measures build context hashing: scans a directory as a build context (honouring its
//! `.dockerignore`), hashes every file the way a `COPY .` cache key needs, and prints the
//! throughput. Used by bench/run.sh; run it on a directory the page cache holds.
//!
//! `cargo run --release -p berth-build --example hash_context -- DIR`

use std::time::Instant;

use berth_build::context::{ContextIndex, IgnoreMatcher};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args().nth(1).ok_or("usage: hash_context DIR")?;
    let dir = std::path::Path::new(&dir);
    let ignore = match std::fs::read_to_string(dir.join(".dockerignore")) {
        Ok(text) => IgnoreMatcher::from_dockerignore(&text)?,
        Err(_) => IgnoreMatcher::default(),
    };
    let started = Instant::now();
    let index = ContextIndex::scan(dir, &ignore)?;
    let digest = index.sources_digest(&[".".to_string()], &[])?;
    let seconds = started.elapsed().as_secs_f64();
    let bytes: u64 = index.entries().iter().map(|e| e.size).sum();
    println!(
        "{digest} {} files {:.1} MB in {:.1} ms: {:.0} MB/s",
        index.entries().len(),
        bytes as f64 / 1e6,
        seconds * 1e3,
        bytes as f64 / 1e6 / seconds
    );
    Ok(())
}
