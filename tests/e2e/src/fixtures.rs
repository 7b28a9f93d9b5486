//! Test inputs: root filesystem tarballs built by the scripts in `scripts/`, and hand-made tar
//! archives (including hostile ones that a careful extractor must refuse or sanitise).

use std::fs::{self, File};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::process::{OutputExt, run_with_timeout};

/// The repository's `scripts/` directory.
pub fn scripts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts")
}

/// The directory where built fixtures are kept between test runs:
/// `$BERTH_CACHE`, else /var/cache/berth-test when writable, else a directory under the temp dir.
pub fn cache_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let candidates = match std::env::var_os("BERTH_CACHE") {
            Some(dir) => vec![PathBuf::from(dir)],
            None => vec![
                PathBuf::from("/var/cache/berth-test"),
                std::env::temp_dir().join("berth-test-cache"),
            ],
        };
        for dir in &candidates {
            if fs::create_dir_all(dir).is_ok() && writable(dir) {
                return dir.clone();
            }
        }
        panic!("no writable fixture cache directory among {candidates:?}");
    })
    .clone()
}

fn writable(dir: &Path) -> bool {
    let probe = dir.join(format!(".probe-{}", std::process::id()));
    let ok = File::create(&probe).is_ok();
    let _ = fs::remove_file(&probe);
    ok
}

/// An exclusive `flock` on a file, released when dropped.
pub struct FileLock {
    file: File,
}

impl FileLock {
    /// Blocks until the lock on `path` (created if missing) is held.
    pub fn acquire(path: &Path) -> io::Result<Self> {
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)?;
        loop {
            // SAFETY: the fd is owned by `file`, which lives as long as the returned lock.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
            if rc == 0 {
                return Ok(Self { file });
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        // SAFETY: the fd is still owned by self.file; unlocking an fd we locked.
        unsafe {
            libc::flock(self.file.as_raw_fd(), libc::LOCK_UN);
        }
    }
}

/// A stable 64-bit FNV-1a hash, used to name cached fixtures after their inputs.
pub fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in *part {
            hash ^= b as u64;
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        hash ^= 0xff;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// The busybox root filesystem tar built by `scripts/make-busybox-rootfs.sh`.
///
/// Built at most once per set of inputs (the script and the busybox binary), shared between test
/// processes through the cache directory and a file lock.
pub fn busybox_rootfs_tar() -> PathBuf {
    static TAR: OnceLock<PathBuf> = OnceLock::new();
    TAR.get_or_init(|| {
        let script = scripts_dir().join("make-busybox-rootfs.sh");
        let script_text =
            fs::read(&script).unwrap_or_else(|e| panic!("cannot read {}: {e}", script.display()));
        let busybox = fs::read("/usr/bin/busybox").unwrap_or_else(|e| {
            panic!("cannot read /usr/bin/busybox ({e}); install busybox-static")
        });
        let key = fnv1a(&[&script_text, &busybox]);
        let dir = cache_dir();
        let tar = dir.join(format!("busybox-rootfs-{key:016x}.tar"));
        let _lock = FileLock::acquire(&dir.join("busybox-rootfs.lock"))
            .unwrap_or_else(|e| panic!("cannot lock the fixture cache {}: {e}", dir.display()));
        if !tar.exists() {
            let mut cmd = Command::new("bash");
            cmd.arg(&script).arg(&tar);
            run_with_timeout(cmd, None, Duration::from_secs(120)).ok("building the busybox rootfs");
        }
        tar
    })
    .clone()
}

/// Whether the Debian rootfs tests should run: `BERTH_E2E_DEBIAN=1`, or the tar is already cached.
pub fn debian_enabled() -> bool {
    std::env::var("BERTH_E2E_DEBIAN").is_ok_and(|v| v == "1") || debian_cached_tar().exists()
}

/// Where `scripts/make-debian-rootfs.sh` caches its tar.
pub fn debian_cached_tar() -> PathBuf {
    let dir = std::env::var_os("BERTH_CACHE")
        .map_or_else(|| PathBuf::from("/var/cache/berth-test"), PathBuf::from);
    dir.join("debian-bookworm.tar")
}

/// The Debian bookworm minbase rootfs tar (built by debootstrap on first use; slow).
pub fn debian_rootfs_tar() -> PathBuf {
    let cached = debian_cached_tar();
    if !cached.exists() {
        let mut cmd = Command::new("bash");
        cmd.arg(scripts_dir().join("make-debian-rootfs.sh"))
            .arg(&cached);
        run_with_timeout(cmd, None, Duration::from_secs(1800)).ok("building the debian rootfs");
    }
    cached
}

/// The OCI architecture name of this machine.
pub fn oci_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        other => other,
    }
}

/// Lower-case hex sha256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A tar writer that writes headers byte by byte, without the path checks of a real tar
/// library, so tests can build archives with `..`, absolute paths and links that point outside.
#[derive(Debug, Default)]
pub struct RawTar {
    buf: Vec<u8>,
}

impl RawTar {
    /// An empty archive.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a directory entry.
    pub fn dir(&mut self, path: &str, mode: u32) -> &mut Self {
        self.entry(path, b'5', mode, "", &[])
    }

    /// Adds a regular file.
    pub fn file(&mut self, path: &str, mode: u32, data: &[u8]) -> &mut Self {
        self.entry(path, b'0', mode, "", data)
    }

    /// Adds a symbolic link `path -> target`.
    pub fn symlink(&mut self, path: &str, target: &str) -> &mut Self {
        self.entry(path, b'2', 0o777, target, &[])
    }

    /// Adds a hard link `path` to the earlier entry `target`.
    pub fn hardlink(&mut self, path: &str, target: &str) -> &mut Self {
        self.entry(path, b'1', 0o644, target, &[])
    }

    /// The archive with its two terminating zero blocks.
    pub fn finish(&self) -> Vec<u8> {
        let mut out = self.buf.clone();
        out.extend_from_slice(&[0u8; 1024]);
        out
    }

    fn entry(&mut self, path: &str, kind: u8, mode: u32, link: &str, data: &[u8]) -> &mut Self {
        // Names and link targets that do not fit the ustar fields go in GNU long-name records,
        // which GNU tar, Go's archive/tar and the Rust tar crate all read.
        let split = split_ustar_path(path);
        if split.is_none() {
            self.long_record(b'L', path);
        }
        if link.len() > 100 {
            self.long_record(b'K', link);
        }
        let (prefix, name) = split.unwrap_or(("", &path[..100.min(path.len())]));
        let link = &link[..100.min(link.len())];
        self.header(prefix, name, kind, mode, link, data.len() as u64);
        self.buf.extend_from_slice(data);
        self.pad(data.len());
        self
    }

    fn long_record(&mut self, kind: u8, text: &str) {
        let mut data = text.as_bytes().to_vec();
        data.push(0);
        self.header("", "././@LongLink", kind, 0o644, "", data.len() as u64);
        self.buf.extend_from_slice(&data);
        self.pad(data.len());
    }

    fn pad(&mut self, len: usize) {
        let pad = (512 - len % 512) % 512;
        self.buf.extend(std::iter::repeat_n(0u8, pad));
    }

    fn header(&mut self, prefix: &str, name: &str, kind: u8, mode: u32, link: &str, size: u64) {
        let mut header = [0u8; 512];
        header[..name.len()].copy_from_slice(name.as_bytes());
        put_octal(&mut header[100..108], mode as u64);
        put_octal(&mut header[108..116], 0);
        put_octal(&mut header[116..124], 0);
        put_octal(&mut header[124..136], size);
        put_octal(&mut header[136..148], 0);
        header[156] = kind;
        header[157..157 + link.len()].copy_from_slice(link.as_bytes());
        header[257..263].copy_from_slice(b"ustar\0");
        header[263..265].copy_from_slice(b"00");
        header[265..269].copy_from_slice(b"root");
        header[297..301].copy_from_slice(b"root");
        header[345..345 + prefix.len()].copy_from_slice(prefix.as_bytes());
        header[148..156].copy_from_slice(b"        ");
        let sum: u32 = header.iter().map(|&b| b as u32).sum();
        let chk = format!("{sum:06o}\0 ");
        header[148..156].copy_from_slice(chk.as_bytes());
        self.buf.extend_from_slice(&header);
    }
}

fn put_octal(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    let text = format!("{value:0digits$o}");
    assert!(
        text.len() == digits,
        "value {value} does not fit a {digits}-digit tar field"
    );
    field[..digits].copy_from_slice(text.as_bytes());
    field[digits] = 0;
}

/// Splits a path into the ustar (prefix, name) pair: name ≤ 100 bytes, prefix ≤ 155;
/// `None` when no split fits.
fn split_ustar_path(path: &str) -> Option<(&str, &str)> {
    if path.len() <= 100 {
        return Some(("", path));
    }
    path.match_indices('/')
        .map(|(i, _)| (&path[..i], &path[i + 1..]))
        .find(|(prefix, name)| prefix.len() <= 155 && name.len() <= 100 && !name.is_empty())
}

/// A `docker save` style archive (manifest.json, config, one `layer.tar`) holding `layer` and
/// tagged `repo_tag`. `outer` may add further entries to the archive itself.
pub fn docker_archive(repo_tag: &str, layer: &[u8], outer: impl FnOnce(&mut RawTar)) -> Vec<u8> {
    let diff_id = sha256_hex(layer);
    let config = serde_json::json!({
        "architecture": oci_arch(),
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": { "Cmd": ["sh"], "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"] },
        "rootfs": { "type": "layers", "diff_ids": [format!("sha256:{diff_id}")] },
        "history": [{ "created": "1970-01-01T00:00:00Z", "created_by": "berth-e2e fixture" }],
    });
    let config_bytes = serde_json::to_vec(&config).expect("config serialises");
    let config_name = format!("{}.json", sha256_hex(&config_bytes));
    let layer_path = format!("{diff_id}/layer.tar");
    let manifest = serde_json::json!([{
        "Config": config_name,
        "RepoTags": [repo_tag],
        "Layers": [layer_path],
    }]);
    let mut tar = RawTar::new();
    tar.file(&config_name, 0o644, &config_bytes);
    tar.dir(&format!("{diff_id}/"), 0o755);
    tar.file(&format!("{diff_id}/VERSION"), 0o644, b"1.0");
    tar.file(&layer_path, 0o644, layer);
    outer(&mut tar);
    tar.file(
        "manifest.json",
        0o644,
        &serde_json::to_vec(&manifest).expect("manifest serialises"),
    );
    tar.finish()
}

/// A `..` path that climbs from any directory up to `/` and then down to `target` (absolute).
pub fn climbing_path(target: &Path) -> String {
    let relative = target.to_string_lossy().trim_start_matches('/').to_string();
    format!("{}{relative}", "../".repeat(24))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The raw writer must produce archives GNU tar reads back, including prefix-split names.
    #[test]
    fn raw_tar_is_readable_by_gnu_tar() {
        let long = format!("{}/file", "d".repeat(120));
        let mut tar = RawTar::new();
        let long_link = format!("{}target", "../".repeat(40));
        let long_name = format!("{}/file", "e".repeat(300));
        tar.dir("a/", 0o755)
            .file("a/hello", 0o644, b"hi\n")
            .symlink("a/link", "hello")
            .file(&long, 0o600, b"x");
        tar.symlink("a/far", &long_link)
            .file(&long_name, 0o644, b"y");
        let dir = std::env::temp_dir().join(format!("berth-e2e-rawtar-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.tar");
        fs::write(&path, tar.finish()).unwrap();
        let mut cmd = Command::new("tar");
        cmd.arg("-tvf").arg(&path);
        let out = run_with_timeout(cmd, None, Duration::from_secs(30));
        let listing = out.ok("tar -tvf");
        fs::remove_dir_all(&dir).unwrap();
        assert!(listing.contains("a/hello"), "{listing}");
        assert!(listing.contains("a/link -> hello"), "{listing}");
        assert!(listing.contains(&long), "{listing}");
        assert!(
            listing.contains(&format!("a/far -> {long_link}")),
            "{listing}"
        );
        assert!(listing.contains(&long_name), "{listing}");
    }

    #[test]
    fn climbing_path_reaches_target() {
        let p = climbing_path(Path::new("/tmp/x/canary"));
        assert!(p.starts_with("../../"));
        assert!(p.ends_with("/tmp/x/canary"));
        assert_eq!(
            Path::new("/a/b")
                .join(&p)
                .components()
                .filter(|c| matches!(c, std::path::Component::ParentDir))
                .count(),
            24
        );
    }

    #[test]
    fn fnv_depends_on_every_part() {
        assert_ne!(fnv1a(&[b"ab", b"c"]), fnv1a(&[b"a", b"bc"]));
    }
}
