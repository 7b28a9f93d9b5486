//! `docker cp` on the wire: the path stat carried by `X-Docker-Container-Path-Stat` (with its
//! Go `os.FileMode` bits) and the path rules both ends apply (Go's `filepath` semantics and
//! moby's `pkg/archive` copy helpers), so the daemon and the CLI agree on every name.

use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// The response header carrying a [`ContainerPathStat`] (standard base64 of its JSON).
pub const PATH_STAT_HEADER: &str = "X-Docker-Container-Path-Stat";

/// Go's `os.ModeDir`.
pub const MODE_DIR: u32 = 1 << 31;
/// Go's `os.ModeSymlink`.
pub const MODE_SYMLINK: u32 = 1 << 27;
/// Go's `os.ModeDevice`.
pub const MODE_DEVICE: u32 = 1 << 26;
/// Go's `os.ModeNamedPipe`.
pub const MODE_NAMED_PIPE: u32 = 1 << 25;
/// Go's `os.ModeSocket`.
pub const MODE_SOCKET: u32 = 1 << 24;
/// Go's `os.ModeSetuid`.
pub const MODE_SETUID: u32 = 1 << 23;
/// Go's `os.ModeSetgid`.
pub const MODE_SETGID: u32 = 1 << 22;
/// Go's `os.ModeCharDevice`.
pub const MODE_CHAR_DEVICE: u32 = 1 << 21;
/// Go's `os.ModeSticky`.
pub const MODE_STICKY: u32 = 1 << 20;

/// moby's `container.PathStat`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ContainerPathStat {
    /// The last element of the requested path (`/` for the root).
    pub name: String,
    /// `st_size`.
    pub size: i64,
    /// A Go `os.FileMode`: permission bits plus the `MODE_*` type bits.
    pub mode: u32,
    /// Modification time, RFC 3339.
    pub mtime: String,
    /// For a symlink: its target resolved inside the container, as an absolute path.
    #[serde(rename = "linkTarget")]
    pub link_target: String,
}

impl ContainerPathStat {
    /// The header value: standard base64 of the JSON.
    pub fn to_header(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        base64::engine::general_purpose::STANDARD.encode(json)
    }

    /// Parses a header value.
    pub fn from_header(value: &str) -> Option<ContainerPathStat> {
        let json = base64::engine::general_purpose::STANDARD
            .decode(value.trim())
            .ok()?;
        serde_json::from_slice(&json).ok()
    }

    /// Whether the path is a directory.
    pub fn is_dir(&self) -> bool {
        self.mode & MODE_DIR != 0
    }

    /// Whether the path is a symbolic link.
    pub fn is_symlink(&self) -> bool {
        self.mode & MODE_SYMLINK != 0
    }
}

/// Converts a POSIX `st_mode` to Go's `os.FileMode`, as Go's `os.Lstat` does.
pub fn file_mode_from_unix(st_mode: u32) -> u32 {
    const S_IFMT: u32 = 0o170000;
    let mut mode = st_mode & 0o777;
    mode |= match st_mode & S_IFMT {
        0o040000 => MODE_DIR,
        0o120000 => MODE_SYMLINK,
        0o060000 => MODE_DEVICE,
        0o020000 => MODE_DEVICE | MODE_CHAR_DEVICE,
        0o010000 => MODE_NAMED_PIPE,
        0o140000 => MODE_SOCKET,
        _ => 0,
    };
    if st_mode & 0o4000 != 0 {
        mode |= MODE_SETUID;
    }
    if st_mode & 0o2000 != 0 {
        mode |= MODE_SETGID;
    }
    if st_mode & 0o1000 != 0 {
        mode |= MODE_STICKY;
    }
    mode
}

/// Go's `filepath.Clean` for slash-separated paths.
pub fn clean(path: &str) -> String {
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|p| *p != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            p => parts.push(p),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_string(),
        (false, false) => joined,
    }
}

/// Go's `filepath.Base`: the last element, trailing slashes ignored; `/` for the root and
/// `.` for an empty path.
pub fn base(path: &str) -> String {
    if path.is_empty() {
        return ".".to_string();
    }
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        return "/".to_string();
    }
    trimmed.rsplit('/').next().unwrap_or(trimmed).to_string()
}

/// Go's `filepath.Dir`.
pub fn dir(path: &str) -> String {
    match path.rfind('/') {
        Some(i) => clean(&path[..=i]),
        None => ".".to_string(),
    }
}

/// Go's `filepath.Split`: everything up to and including the last slash, and the rest.
pub fn split(path: &str) -> (&str, &str) {
    match path.rfind('/') {
        Some(i) => (&path[..=i], &path[i + 1..]),
        None => ("", path),
    }
}

/// Go's `filepath.Join` of two elements.
pub fn join(a: &str, b: &str) -> String {
    match (a.is_empty(), b.is_empty()) {
        (true, true) => String::new(),
        (true, false) => clean(b),
        (false, true) => clean(a),
        (false, false) => clean(&format!("{a}/{b}")),
    }
}

/// Whether the path ends in a separator.
pub fn has_trailing_separator(path: &str) -> bool {
    path.ends_with('/')
}

/// Whether the path's last element is `.` (`dir/.`), which means "the contents of dir".
pub fn specifies_current_dir(path: &str) -> bool {
    base(path) == "."
}

/// moby's `PreserveTrailingDotOrSeparator`: puts back the `/.` or `/` that cleaning removed.
pub fn preserve_trailing_dot_or_separator(cleaned: &str, original: &str) -> String {
    let mut out = cleaned.to_string();
    if !specifies_current_dir(&out) && specifies_current_dir(original) {
        if !has_trailing_separator(&out) {
            out.push('/');
        }
        out.push('.');
    }
    if !has_trailing_separator(&out) && has_trailing_separator(original) {
        out.push('/');
    }
    out
}

/// moby's `SplitPathDirEntry`: the directory and the entry of a path, keeping a final `.`.
pub fn split_path_dir_entry(path: &str) -> (String, String) {
    let mut cleaned = clean(path);
    if specifies_current_dir(path) {
        cleaned.push_str("/.");
    }
    (dir(&cleaned), base(&cleaned))
}

/// An archived path inside the container: `path` made absolute, its trailing `/` or `/.`
/// kept (moby's `ResolvePath` first step).
pub fn container_abs_path(path: &str) -> String {
    preserve_trailing_dot_or_separator(&join("/", path), path)
}

/// The renaming moby applies to archive entry names: the first occurrence of `old` replaced
/// by `new` (`/` as `new` means the root, replaced by nothing).
pub fn rebase_entry(name: &str, old: &str, new: &str) -> String {
    if new.is_empty() {
        return name.to_string();
    }
    let replacement = if new == "/" { "" } else { new };
    name.replacen(old, replacement, 1)
}

/// Extended attributes as `(name, value)` pairs.
pub type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

/// The PAX record keyword prefix of an extended attribute (`SCHILY.xattr.<name>`), as moby,
/// Go's `archive/tar` and GNU tar write them.
pub const PAX_XATTR_PREFIX: &str = "SCHILY.xattr.";

/// The extended attribute holding a file's capabilities (`setcap`).
pub const XATTR_CAPABILITY: &str = "security.capability";

/// overlayfs' own attributes (opaque directories, redirects, origins): never archived nor
/// extracted, as they describe a layer's place in an overlay, not the file.
const XATTR_OVERLAY_PREFIX: &[u8] = b"trusted.overlay.";

/// Whether `docker cp` archives carry the extended attribute `name` of a file: its
/// capabilities (`security.capability`, the one moby's archive writer carries), and `user.*`
/// and `trusted.*` attributes (which moby's readers apply, and BuildKit's copies keep), but
/// neither overlayfs' `trusted.overlay.*` nor the host's security labels (other `security.*`
/// names: SELinux, IMA, EVM) nor `system.*` ACLs. A name that cannot be a PAX keyword (not
/// UTF-8, or holding `=`) is left out. berth-store's layer writer follows the same rule.
pub fn xattr_is_archived(name: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(name) else {
        return false;
    };
    if text.contains('=') || name.starts_with(XATTR_OVERLAY_PREFIX) {
        return false;
    }
    text == XATTR_CAPABILITY || text.starts_with("user.") || text.starts_with("trusted.")
}

/// Whether an archive's `SCHILY.xattr.<name>` record is set on the extracted file: all of
/// them, as moby's `Untar` does, except overlayfs' `trusted.overlay.*`.
pub fn xattr_is_extracted(name: &[u8]) -> bool {
    !name.is_empty() && !name.starts_with(XATTR_OVERLAY_PREFIX)
}

/// The value archived for the attribute `name`: a v3 file capability, which names the root
/// user of the user namespace it was set in, becomes the v2 one (moby's
/// `ReadSecurityXattrToTarHeader`); anything else is kept as it is.
pub fn archived_xattr_value(name: &[u8], mut value: Vec<u8>) -> Vec<u8> {
    // linux/capability.h: the revision is the high byte of the little-endian magic.
    const REVISION_OFFSET: usize = 3;
    const VFS_CAP_REVISION_2: u8 = 2;
    const VFS_CAP_REVISION_3: u8 = 3;
    const XATTR_CAPS_SZ_2: usize = 20;
    if name == XATTR_CAPABILITY.as_bytes()
        && value.len() > XATTR_CAPS_SZ_2
        && value[REVISION_OFFSET] == VFS_CAP_REVISION_3
    {
        value[REVISION_OFFSET] = VFS_CAP_REVISION_2;
        value.truncate(XATTR_CAPS_SZ_2);
    }
    value
}

/// The extended attributes among an entry's PAX records (`(keyword, value)` pairs) that
/// extraction sets, as `(name, value)`.
pub fn xattrs_to_extract<'a>(records: impl IntoIterator<Item = (&'a [u8], &'a [u8])>) -> Xattrs {
    records
        .into_iter()
        .filter_map(|(key, value)| {
            let name = key.strip_prefix(PAX_XATTR_PREFIX.as_bytes())?;
            xattr_is_extracted(name).then(|| (name.to_vec(), value.to_vec()))
        })
        .collect()
}

/// One PAX record: `"<length> <keyword>=<value>\n"`, the length counting itself.
fn pax_record(key: &[u8], value: &[u8]) -> Vec<u8> {
    // The space, the `=` and the newline.
    let rest = key.len() + value.len() + 3;
    let mut len = rest + 1;
    while rest + len.to_string().len() != len {
        len = rest + len.to_string().len();
    }
    let mut out = format!("{len} ").into_bytes();
    out.extend_from_slice(key);
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
    out
}

/// Tar entry type flags.
pub mod kind {
    /// A regular file.
    pub const REGULAR: u8 = b'0';
    /// A hard link to an earlier entry.
    pub const LINK: u8 = b'1';
    /// A symbolic link.
    pub const SYMLINK: u8 = b'2';
    /// A character device.
    pub const CHAR: u8 = b'3';
    /// A block device.
    pub const BLOCK: u8 = b'4';
    /// A directory.
    pub const DIR: u8 = b'5';
    /// A named pipe.
    pub const FIFO: u8 = b'6';
    /// PAX extended header records for the next entry.
    pub const PAX: u8 = b'x';
}

/// One tar entry's header, encoded with its names exactly as given (`./a` stays `./a`, which
/// the copy rules depend on; general tar writers normalise names).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TarHeader {
    /// The entry name (directories end with `/`).
    pub name: Vec<u8>,
    /// The link target of a symlink or hard link.
    pub link: Vec<u8>,
    /// One of [`kind`].
    pub kind: u8,
    /// Permission bits with setuid, setgid and sticky (`0o7777`).
    pub mode: u32,
    /// Owner.
    pub uid: u64,
    /// Group.
    pub gid: u64,
    /// Size of the data that follows (regular files only).
    pub size: u64,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
    /// Device major number (devices only).
    pub dev_major: u32,
    /// Device minor number (devices only).
    pub dev_minor: u32,
    /// Extended attributes `(name, value)`, written as `SCHILY.xattr.` PAX records.
    pub xattrs: Xattrs,
}

/// The tar block size.
pub const TAR_BLOCK: usize = 512;

impl TarHeader {
    /// The header blocks: a PAX extended header (`x`) holding the extended attributes when
    /// there are any, GNU long-link (`K`) and long-name (`L`) records when a name does not fit
    /// in its field, then the header itself.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        if !self.xattrs.is_empty() {
            let mut records = Vec::new();
            for (name, value) in &self.xattrs {
                let mut key = PAX_XATTR_PREFIX.as_bytes().to_vec();
                key.extend_from_slice(name);
                records.extend(pax_record(&key, value));
            }
            let pax = TarHeader {
                name: pax_header_name(&self.name),
                kind: kind::PAX,
                size: records.len() as u64,
                ..Default::default()
            };
            out.extend_from_slice(&pax.block());
            out.extend_from_slice(&records);
            out.resize(out.len() + tar_padding(records.len() as u64), 0);
        }
        for (value, flag) in [(&self.link, b'K'), (&self.name, b'L')] {
            if value.len() > 100 {
                let long = TarHeader {
                    name: b"././@LongLink".to_vec(),
                    kind: flag,
                    size: value.len() as u64 + 1,
                    ..Default::default()
                };
                out.extend_from_slice(&long.block());
                out.extend_from_slice(value);
                out.push(0);
                out.resize(out.len() + tar_padding(value.len() as u64 + 1), 0);
            }
        }
        out.extend_from_slice(&self.block());
        out
    }

    fn block(&self) -> [u8; TAR_BLOCK] {
        let mut b = [0u8; TAR_BLOCK];
        let name_len = self.name.len().min(100);
        b[..name_len].copy_from_slice(&self.name[..name_len]);
        numeric(&mut b[100..108], u64::from(self.mode & 0o7777));
        numeric(&mut b[108..116], self.uid);
        numeric(&mut b[116..124], self.gid);
        numeric(&mut b[124..136], self.size);
        numeric(&mut b[136..148], self.mtime.max(0) as u64);
        b[156] = self.kind;
        let link_len = self.link.len().min(100);
        b[157..157 + link_len].copy_from_slice(&self.link[..link_len]);
        if self.kind == kind::PAX {
            // POSIX magic and version: PAX headers belong to that format.
            b[257..265].copy_from_slice(b"ustar\x0000");
        } else {
            // GNU magic and version.
            b[257..265].copy_from_slice(b"ustar  \0");
        }
        if matches!(self.kind, kind::CHAR | kind::BLOCK) {
            numeric(&mut b[329..337], u64::from(self.dev_major));
            numeric(&mut b[337..345], u64::from(self.dev_minor));
        }
        b[148..156].copy_from_slice(b"        ");
        let sum: u32 = b.iter().map(|&x| u32::from(x)).sum();
        let digits = format!("{sum:06o}\0 ");
        b[148..156].copy_from_slice(digits.as_bytes());
        b
    }
}

/// The name of the PAX header of the entry `name`, as Go's `archive/tar` makes it:
/// `<dir>/PaxHeaders.0/<base>`, cut to the name field.
fn pax_header_name(name: &[u8]) -> Vec<u8> {
    let trimmed = name.strip_suffix(b"/").unwrap_or(name);
    let (dir, base) = match trimmed.iter().rposition(|&b| b == b'/') {
        Some(i) => trimmed.split_at(i + 1),
        None => (&b""[..], trimmed),
    };
    let mut out = dir.to_vec();
    out.extend_from_slice(b"PaxHeaders.0/");
    out.extend_from_slice(base);
    out.truncate(100);
    while out.last() == Some(&b'/') {
        out.pop();
    }
    out
}

/// Writes a number as NUL-terminated octal, or base-256 when it does not fit (GNU).
fn numeric(field: &mut [u8], value: u64) {
    let width = field.len() - 1;
    let octal = format!("{value:0width$o}");
    if octal.len() <= width {
        field[..width].copy_from_slice(octal.as_bytes());
        field[width] = 0;
    } else {
        let len = field.len();
        for (i, byte) in field.iter_mut().enumerate() {
            let shift = 8 * (len - 1 - i);
            *byte = if shift >= 64 {
                0
            } else {
                (value >> shift) as u8
            };
        }
        field[0] |= 0x80;
    }
}

/// Zero bytes after `size` bytes of data, up to the next block boundary.
pub fn tar_padding(size: u64) -> usize {
    ((TAR_BLOCK as u64 - size % TAR_BLOCK as u64) % TAR_BLOCK as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_path_functions() {
        assert_eq!(clean("/a/../b/./c/"), "/b/c");
        assert_eq!(clean("/../.."), "/");
        assert_eq!(clean("a/../../b"), "../b");
        assert_eq!(clean(""), ".");
        assert_eq!(base("/a/b/"), "b");
        assert_eq!(base("/"), "/");
        assert_eq!(base("/a/."), ".");
        assert_eq!(dir("/a/b"), "/a");
        assert_eq!(dir("b"), ".");
        assert_eq!(split("/a/b"), ("/a/", "b"));
        assert_eq!(split("/a/b/"), ("/a/b/", ""));
        assert_eq!(join("/", "etc/x/"), "/etc/x");
    }

    #[test]
    fn trailing_dot_and_slash_survive() {
        assert_eq!(container_abs_path("etc/"), "/etc/");
        assert_eq!(container_abs_path("/tmp/d/."), "/tmp/d/.");
        assert_eq!(container_abs_path("/tmp/d/./"), "/tmp/d/./");
        assert_eq!(container_abs_path("/"), "/");
        assert_eq!(container_abs_path("a/../b"), "/b");
        assert_eq!(
            split_path_dir_entry("/tmp/d/."),
            ("/tmp/d".into(), ".".into())
        );
        assert_eq!(split_path_dir_entry("/tmp/f"), ("/tmp".into(), "f".into()));
        assert_eq!(split_path_dir_entry("f"), (".".into(), "f".into()));
    }

    #[test]
    fn rebase_replaces_the_first_occurrence() {
        assert_eq!(rebase_entry("./a/b", ".", "etc"), "etc/a/b");
        assert_eq!(rebase_entry("dir/dir", "dir", "new"), "new/dir");
        assert_eq!(rebase_entry("./a", ".", "/"), "/a");
        assert_eq!(rebase_entry("x", "x", ""), "x");
    }

    #[test]
    fn tar_headers_keep_names_and_carry_long_ones() {
        let h = TarHeader {
            name: b"./a".to_vec(),
            kind: kind::REGULAR,
            mode: 0o4755,
            uid: 1000,
            gid: 1000,
            size: 5,
            mtime: 1_700_000_000,
            ..Default::default()
        };
        let block = h.encode();
        assert_eq!(block.len(), TAR_BLOCK);
        assert_eq!(&block[..4], b"./a\0");
        assert_eq!(&block[100..108], b"0004755\0");
        assert_eq!(&block[124..136], b"00000000005\0");
        // The checksum is the byte sum with the checksum field read as spaces.
        let mut copy = block.clone();
        copy[148..156].copy_from_slice(b"        ");
        let sum: u32 = copy.iter().map(|&x| u32::from(x)).sum();
        let field = std::str::from_utf8(&block[148..154]).unwrap();
        assert_eq!(u32::from_str_radix(field, 8).unwrap(), sum);
        let long = TarHeader {
            name: vec![b'x'; 150],
            link: vec![b'y'; 120],
            kind: kind::SYMLINK,
            ..Default::default()
        };
        let blocks = long.encode();
        // K record + its data block, L record + its data block, the header.
        assert_eq!(blocks.len(), 5 * TAR_BLOCK);
        assert_eq!(blocks[156], b'K');
        assert_eq!(blocks[2 * TAR_BLOCK + 156], b'L');
        assert_eq!(tar_padding(5), 507);
        assert_eq!(tar_padding(1024), 0);
        let mut big = [0u8; 12];
        numeric(&mut big, 1 << 40);
        assert_eq!(big[0] & 0x80, 0x80);
    }

    /// The PAX records of an encoded header's `x` block, and the blocks that follow them.
    fn pax_records(encoded: &[u8]) -> (Xattrs, &[u8]) {
        assert_eq!(encoded[156], kind::PAX, "a PAX header comes first");
        assert_eq!(&encoded[257..265], b"ustar\x0000");
        let size_field = std::str::from_utf8(&encoded[124..135]).unwrap();
        let size = usize::from_str_radix(size_field, 8).unwrap();
        let mut data = &encoded[TAR_BLOCK..TAR_BLOCK + size];
        let mut records = Vec::new();
        while !data.is_empty() {
            let space = data.iter().position(|&b| b == b' ').unwrap();
            let len: usize = std::str::from_utf8(&data[..space])
                .unwrap()
                .parse()
                .unwrap();
            let record = &data[space + 1..len - 1];
            assert_eq!(data[len - 1], b'\n', "records end with a newline");
            let eq = record.iter().position(|&b| b == b'=').unwrap();
            records.push((record[..eq].to_vec(), record[eq + 1..].to_vec()));
            data = &data[len..];
        }
        let rest = TAR_BLOCK + size + tar_padding(size as u64);
        (records, &encoded[rest..])
    }

    #[test]
    fn xattrs_travel_as_pax_records_before_the_header() {
        let capability = vec![
            1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ];
        let h = TarHeader {
            name: b"dir/ping".to_vec(),
            kind: kind::REGULAR,
            mode: 0o755,
            xattrs: vec![
                (b"security.capability".to_vec(), capability.clone()),
                (b"user.long".to_vec(), vec![b'v'; 73]),
            ],
            ..Default::default()
        };
        let encoded = h.encode();
        assert_eq!(&encoded[..20], b"dir/PaxHeaders.0/pin");
        let (records, rest) = pax_records(&encoded);
        assert_eq!(
            records,
            [
                (b"SCHILY.xattr.security.capability".to_vec(), capability),
                (b"SCHILY.xattr.user.long".to_vec(), vec![b'v'; 73]),
            ]
        );
        // The entry's own header follows, unchanged.
        let plain = TarHeader {
            xattrs: Vec::new(),
            ..h.clone()
        };
        assert_eq!(rest, plain.encode());
        assert_eq!(pax_record(b"k", b"v"), b"6 k=v\n");
        // Eight bytes and one digit make nine; nine bytes and one digit would make ten,
        // which takes two digits: eleven.
        assert_eq!(pax_record(b"k", &[b'v'; 4]), b"9 k=vvvv\n");
        assert_eq!(pax_record(b"k", &[b'v'; 5]), b"11 k=vvvvv\n");
        assert_eq!(pax_header_name(b"a/"), b"PaxHeaders.0/a");
    }

    #[test]
    fn which_xattrs_travel() {
        for carried in ["security.capability", "user.test", "trusted.md5"] {
            assert!(xattr_is_archived(carried.as_bytes()), "{carried}");
        }
        for left_out in [
            "trusted.overlay.opaque",
            "security.selinux",
            "security.ima",
            "system.posix_acl_access",
            "user.a=b",
        ] {
            assert!(!xattr_is_archived(left_out.as_bytes()), "{left_out}");
        }
        assert!(!xattr_is_archived(b"user.\xff"));
        let records: Vec<(&[u8], &[u8])> = vec![
            (b"SCHILY.xattr.user.a", b"1"),
            (b"SCHILY.xattr.security.selinux", b"label"),
            (b"SCHILY.xattr.trusted.overlay.redirect", b"/x"),
            (b"path", b"long/name"),
        ];
        assert_eq!(
            xattrs_to_extract(records),
            [
                (b"user.a".to_vec(), b"1".to_vec()),
                (b"security.selinux".to_vec(), b"label".to_vec())
            ]
        );
    }

    #[test]
    fn v3_capabilities_are_archived_as_v2() {
        let mut v3 = vec![0u8; 24];
        v3[3] = 3;
        v3[0] = 1;
        v3[4] = 0x20;
        v3[20] = 0xe8;
        v3[21] = 0x03;
        let v2 = archived_xattr_value(b"security.capability", v3.clone());
        assert_eq!(v2.len(), 20);
        assert_eq!(v2[3], 2);
        assert_eq!(&v2[..3], &v3[..3]);
        assert_eq!(&v2[4..], &v3[4..20]);
        // v2 values and other attributes are kept as they are.
        assert_eq!(archived_xattr_value(b"security.capability", v2.clone()), v2);
        assert_eq!(archived_xattr_value(b"user.x", v3.clone()), v3);
    }

    #[test]
    fn modes_and_header_round_trip() {
        assert_eq!(file_mode_from_unix(0o040755), MODE_DIR | 0o755);
        assert_eq!(file_mode_from_unix(0o120777), MODE_SYMLINK | 0o777);
        assert_eq!(file_mode_from_unix(0o104755), MODE_SETUID | 0o755);
        assert_eq!(
            file_mode_from_unix(0o020620),
            MODE_DEVICE | MODE_CHAR_DEVICE | 0o620
        );
        // The value the compatibility notes quote for a 0755 directory.
        assert_eq!(file_mode_from_unix(0o040755), 2_147_484_141);
        let stat = ContainerPathStat {
            name: "etc".into(),
            size: 4096,
            mode: MODE_DIR | 0o755,
            mtime: "2024-01-01T00:00:00Z".into(),
            link_target: String::new(),
        };
        let header = stat.to_header();
        assert_eq!(ContainerPathStat::from_header(&header), Some(stat.clone()));
        assert!(stat.is_dir() && !stat.is_symlink());
        let json = String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(header)
                .unwrap(),
        )
        .unwrap();
        assert!(json.contains("\"linkTarget\":\"\""), "{json}");
    }
}
