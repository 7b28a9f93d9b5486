//! The local half of `berth cp`: moby's `TarResource` (archiving a local path under the
//! names the copy rules give it) and `Untar` as `CopyTo` runs it (no ownership changes, a
//! directory and a non-directory never replace each other). Extended attributes travel as
//! `SCHILY.xattr.` PAX records both ways (see `berth_api::archive::xattr_is_archived`).

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use berth_api::archive::{self as wire, TarHeader, Xattrs, kind};

/// A renaming of archive entries (moby's `RebaseArchiveEntries`): the first occurrence of
/// `old` in a name, and in a hard link's target, becomes `new`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rename {
    /// What to replace.
    pub old: String,
    /// The replacement.
    pub new: String,
}

impl Rename {
    fn apply(&self, name: &str) -> String {
        // moby: a root `old` means "nothing", so the separator every name starts with stays.
        let old = if self.old == "/" {
            ""
        } else {
            self.old.as_str()
        };
        if old.is_empty() {
            return format!("{}{name}", self.new);
        }
        name.replacen(old, &self.new, 1)
    }
}

fn apply_all(renames: &[Rename], name: &str) -> String {
    renames
        .iter()
        .fold(name.to_string(), |acc, r| r.apply(&acc))
}

/// Writes the tar of the local `path` (resolved, see `CopyInfoSourcePath`) as moby's
/// `TarResourceRebase` names it, `rebase_name` first and then `renames`; returns nothing but
/// IO errors (files that vanish or cannot be archived, like sockets, are skipped).
pub fn write_resource(
    path: &str,
    rebase_name: &str,
    renames: &[Rename],
    out: &mut dyn Write,
) -> io::Result<()> {
    let (source_dir, source_base) = wire::split_path_dir_entry(path);
    let root = format!("{}/{source_base}", source_dir.trim_end_matches('/'));
    let mut writer = LocalTar {
        out,
        renames,
        include: source_base.clone(),
        rebase_name: rebase_name.to_string(),
        hard_links: HashMap::new(),
    };
    fs::symlink_metadata(&root)?;
    writer.walk(Path::new(&root), &source_base)?;
    writer.out.write_all(&[0u8; 2 * wire::TAR_BLOCK])?;
    writer.out.flush()
}

struct LocalTar<'a> {
    out: &'a mut dyn Write,
    renames: &'a [Rename],
    include: String,
    rebase_name: String,
    hard_links: HashMap<(u64, u64), Vec<u8>>,
}

impl LocalTar<'_> {
    /// `rel` is moby's relative name: the included base (`dir`, `.`), then `dir/a`, `./a`.
    fn walk(&mut self, path: &Path, rel: &str) -> io::Result<()> {
        let meta = match fs::symlink_metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let mut name = rel.to_string();
        if !self.rebase_name.is_empty() {
            let replacement = if self.rebase_name == "/" {
                ""
            } else {
                self.rebase_name.as_str()
            };
            name = name.replacen(&self.include, replacement, 1);
        }
        let name = apply_all(self.renames, &name);
        self.entry(path, &meta, name)?;
        if meta.is_dir() {
            let mut children: Vec<OsString> = fs::read_dir(path)?
                .filter_map(Result::ok)
                .map(|e| e.file_name())
                .collect();
            children.sort();
            for child in children {
                let child_rel = format!("{rel}/{}", child.to_string_lossy());
                self.walk(&path.join(&child), &child_rel)?;
            }
        }
        Ok(())
    }

    fn entry(&mut self, path: &Path, meta: &fs::Metadata, name: String) -> io::Result<()> {
        let ft = meta.file_type();
        let mut header = TarHeader {
            name: name.into_bytes(),
            mode: meta.mode() & 0o7777,
            uid: u64::from(meta.uid()),
            gid: u64::from(meta.gid()),
            mtime: meta.mtime(),
            xattrs: archived_xattrs(path)?,
            ..Default::default()
        };
        if ft.is_dir() {
            if !header.name.ends_with(b"/") {
                header.name.push(b'/');
            }
            header.kind = kind::DIR;
            return self.out.write_all(&header.encode());
        }
        if meta.nlink() > 1 {
            let key = (meta.dev(), meta.ino());
            if let Some(first) = self.hard_links.get(&key) {
                header.kind = kind::LINK;
                header.link = first.clone();
                // The first name carried the inode's attributes.
                header.xattrs.clear();
                return self.out.write_all(&header.encode());
            }
            self.hard_links.insert(key, header.name.clone());
        }
        if ft.is_file() {
            let file = match fs::File::open(path) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(e),
            };
            let size = meta.len();
            header.kind = kind::REGULAR;
            header.size = size;
            self.out.write_all(&header.encode())?;
            // Exactly the announced size, so a file changing meanwhile keeps the tar valid.
            let copied = io::copy(&mut file.take(size), self.out)?;
            let pad = (size - copied) as usize + wire::tar_padding(size);
            return self.out.write_all(&vec![0u8; pad]);
        }
        if ft.is_symlink() {
            header.kind = kind::SYMLINK;
            header.link = fs::read_link(path)?.into_os_string().into_vec();
        } else if ft.is_char_device() || ft.is_block_device() {
            header.kind = if ft.is_char_device() {
                kind::CHAR
            } else {
                kind::BLOCK
            };
            header.dev_major = libc::major(meta.rdev());
            header.dev_minor = libc::minor(meta.rdev());
        } else if ft.is_fifo() {
            header.kind = kind::FIFO;
        } else {
            // Sockets: tar has no type for them.
            return Ok(());
        }
        self.out.write_all(&header.encode())
    }
}

/// The extended attributes `cp` archives carry of `path` itself (not a symlink's target),
/// sorted by name.
fn archived_xattrs(path: &Path) -> io::Result<Xattrs> {
    let names = match xattr::list(path) {
        Ok(names) => names,
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(Vec::new()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut names: Vec<OsString> = names
        .filter(|n| wire::xattr_is_archived(n.as_bytes()))
        .collect();
    names.sort();
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        // `None`: removed since it was listed.
        if let Some(value) = xattr::get(path, &name)? {
            let name = name.into_vec();
            let value = wire::archived_xattr_value(&name, value);
            out.push((name, value));
        }
    }
    Ok(out)
}

/// Sets an extracted entry's extended attributes on `path` itself. What the kernel or the
/// file system refuses (`EPERM`: a capability or `trusted.*` without privileges, `user.*` on
/// a symlink; `ENOTSUP`: a namespace the file system lacks) is left out and named in
/// `ignored`, as moby's `Untar` ignores `EPERM`.
fn set_xattrs(path: &str, xattrs: &Xattrs, ignored: &mut Vec<String>) -> io::Result<()> {
    for (key, value) in xattrs {
        let key_shown = String::from_utf8_lossy(key);
        match xattr::set(path, std::ffi::OsStr::from_bytes(key), value) {
            Ok(()) => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::EPERM) | Some(libc::ENOTSUP)) => {
                ignored.push(format!("{key_shown} on {path}: {e}"));
            }
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("set extended attribute {key_shown} on {path}: {e}"),
                ));
            }
        }
    }
    Ok(())
}

/// Extracts `input` into the local directory `dest` with `renames` applied to the entry
/// names (moby's `Untar` with `NoLchown` and `NoOverwriteDirNonDir`, as `CopyTo` calls it).
/// Returns the extended attributes that could not be set (see [`set_xattrs`]).
pub fn extract(input: &mut dyn Read, dest: &str, renames: &[Rename]) -> io::Result<Vec<String>> {
    let mut archive = tar::Archive::new(input);
    let mut dir_times: Vec<(String, i64)> = Vec::new();
    let mut ignored = Vec::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
        let header = entry.header().clone();
        let xattrs = match entry.pax_extensions()? {
            Some(records) => {
                let records = records.collect::<io::Result<Vec<_>>>()?;
                wire::xattrs_to_extract(records.iter().map(|r| (r.key_bytes(), r.value_bytes())))
            }
            None => Vec::new(),
        };
        let entry_type = header.entry_type();
        if entry_type.is_pax_global_extensions() {
            continue;
        }
        let raw = apply_all(renames, &String::from_utf8_lossy(&entry.path_bytes()));
        let name = wire::clean(&raw);
        let path = wire::join(dest, &name);
        if !within(dest, &path) {
            return Err(breakout(format!("{raw:?} is outside of {dest:?}")));
        }
        let parent = wire::dir(&path);
        if !Path::new(&parent).exists() {
            fs::create_dir_all(&parent)?;
        }
        let is_dir = entry_type.is_dir();
        if let Ok(existing) = fs::symlink_metadata(&path) {
            let exists_dir = existing.is_dir();
            if exists_dir && !is_dir {
                return Err(io::Error::other(format!(
                    "cannot overwrite directory {path:?} with non-directory {dest:?}"
                )));
            }
            if !exists_dir && is_dir {
                return Err(io::Error::other(format!(
                    "cannot overwrite non-directory {path:?} with directory {dest:?}"
                )));
            }
            if exists_dir && name == "." {
                continue;
            }
            if !exists_dir {
                fs::remove_file(&path)?;
            }
        }
        let mode = header.mode().unwrap_or(0o644) & 0o7777;
        let mtime = header.mtime().unwrap_or(0) as i64;
        match entry_type {
            t if t.is_dir() => {
                if !Path::new(&path).is_dir() {
                    fs::create_dir(&path)?;
                }
                dir_times.push((path.clone(), mtime));
            }
            t if t.is_file() || t == tar::EntryType::Continuous => {
                let mut file = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&path)?;
                io::copy(&mut entry, &mut file)?;
            }
            t if t.is_symlink() => {
                let target = entry
                    .link_name_bytes()
                    .map(|b| OsString::from_vec(b.into_owned()))
                    .unwrap_or_default();
                let lexical = wire::join(&wire::dir(&path), &target.to_string_lossy());
                if !within(dest, &lexical) {
                    return Err(breakout(format!(
                        "invalid symlink {path:?} -> {:?}",
                        target.to_string_lossy()
                    )));
                }
                std::os::unix::fs::symlink(&target, &path)?;
            }
            t if t.is_hard_link() => {
                let target = entry
                    .link_name_bytes()
                    .map(|b| apply_all(renames, &String::from_utf8_lossy(&b)))
                    .unwrap_or_default();
                let target_path = wire::join(dest, &target);
                if !within(dest, &target_path) {
                    return Err(breakout(format!(
                        "invalid hardlink {target_path:?} -> {target:?}"
                    )));
                }
                fs::hard_link(&target_path, &path)?;
            }
            t if t.is_character_special() || t.is_block_special() || t.is_fifo() => {
                let kind = if t.is_character_special() {
                    nix::sys::stat::SFlag::S_IFCHR
                } else if t.is_block_special() {
                    nix::sys::stat::SFlag::S_IFBLK
                } else {
                    nix::sys::stat::SFlag::S_IFIFO
                };
                let dev = libc::makedev(
                    header.device_major().ok().flatten().unwrap_or(0),
                    header.device_minor().ok().flatten().unwrap_or(0),
                );
                nix::sys::stat::mknod(
                    path.as_str(),
                    kind,
                    nix::sys::stat::Mode::from_bits_truncate(mode & 0o777),
                    dev,
                )
                .map_err(|e| io::Error::from_raw_os_error(e as i32))?;
            }
            other => {
                return Err(io::Error::other(format!(
                    "unhandled tar header type {:?}",
                    other.as_byte() as char
                )));
            }
        }
        // Before the chmod, as moby.
        set_xattrs(&path, &xattrs, &mut ignored)?;
        if !entry_type.is_symlink() {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&path, fs::Permissions::from_mode(mode))?;
        }
        if !is_dir && !entry_type.is_hard_link() {
            set_mtime(&path, mtime)?;
        }
    }
    for (path, mtime) in dir_times {
        set_mtime(&path, mtime)?;
    }
    Ok(ignored)
}

fn set_mtime(path: &str, mtime: i64) -> io::Result<()> {
    let t = nix::sys::time::TimeSpec::new(mtime, 0);
    nix::sys::stat::utimensat(
        None,
        path,
        &t,
        &t,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .map_err(|e| io::Error::from_raw_os_error(e as i32))
}

/// Whether the lexical `path` is `dir` or below it.
fn within(dir: &str, path: &str) -> bool {
    dir == "/" || path == dir || path.starts_with(&format!("{}/", dir.trim_end_matches('/')))
}

fn breakout(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn names(data: &[u8]) -> Vec<String> {
        tar::Archive::new(data)
            .entries()
            .unwrap()
            .map(|e| String::from_utf8_lossy(&e.unwrap().path_bytes()).into_owned())
            .collect()
    }

    fn source() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("src");
        fs::create_dir_all(d.join("sub")).unwrap();
        fs::write(d.join("a.txt"), "hello").unwrap();
        fs::write(d.join("sub/b.txt"), "deep").unwrap();
        symlink("a.txt", d.join("link")).unwrap();
        fs::hard_link(d.join("a.txt"), d.join("hard")).unwrap();
        dir
    }

    #[test]
    fn resources_are_named_like_mobys_tar_resource() {
        let dir = source();
        let src = dir.path().join("src").display().to_string();
        let mut out = Vec::new();
        write_resource(&src, "", &[], &mut out).unwrap();
        assert_eq!(
            names(&out),
            [
                "src/",
                "src/a.txt",
                "src/hard",
                "src/link",
                "src/sub/",
                "src/sub/b.txt"
            ]
        );
        let mut out = Vec::new();
        write_resource(&format!("{src}/."), "", &[], &mut out).unwrap();
        assert_eq!(
            names(&out),
            ["./", "./a.txt", "./hard", "./link", "./sub/", "./sub/b.txt"]
        );
        let rename = [Rename {
            old: "src".into(),
            new: "copy".into(),
        }];
        let mut out = Vec::new();
        write_resource(&src, "", &rename, &mut out).unwrap();
        assert_eq!(names(&out)[1], "copy/a.txt");
        let mut archive = tar::Archive::new(&out[..]);
        let hard = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap())
            .find(|e| e.header().entry_type() == tar::EntryType::Link)
            .unwrap();
        assert_eq!(hard.link_name_bytes().unwrap().as_ref(), b"copy/a.txt");
    }

    #[test]
    fn extraction_round_trips_and_refuses_breakouts() {
        let dir = source();
        let src = dir.path().join("src").display().to_string();
        let mut out = Vec::new();
        write_resource(&src, "", &[], &mut out).unwrap();
        let target = tempfile::tempdir().unwrap();
        let dest = target.path().display().to_string();
        let rename = [Rename {
            old: "src".into(),
            new: "copy".into(),
        }];
        extract(&mut &out[..], &dest, &rename).unwrap();
        let copy = target.path().join("copy");
        assert_eq!(fs::read_to_string(copy.join("sub/b.txt")).unwrap(), "deep");
        assert_eq!(
            fs::read_link(copy.join("link")).unwrap(),
            Path::new("a.txt")
        );
        assert_eq!(fs::metadata(copy.join("hard")).unwrap().nlink(), 2);
        let src_mtime = fs::metadata(dir.path().join("src/sub")).unwrap().mtime();
        assert_eq!(fs::metadata(copy.join("sub")).unwrap().mtime(), src_mtime);
        // A second copy onto the same names: files replaced, a dir over a file refused.
        extract(&mut &out[..], &dest, &rename).unwrap();
        fs::remove_dir_all(copy.join("sub")).unwrap();
        fs::write(copy.join("sub"), "file").unwrap();
        assert!(extract(&mut &out[..], &dest, &rename).is_err());

        let mut evil = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_path("evil").unwrap();
        h.set_link_name("../../../etc").unwrap();
        h.set_size(0);
        h.set_cksum();
        evil.append(&h, &[][..]).unwrap();
        let evil = evil.into_inner().unwrap();
        let e = extract(&mut &evil[..], &dest, &[]).unwrap_err();
        assert!(e.to_string().contains("invalid symlink"), "{e}");
    }

    #[test]
    fn extended_attributes_round_trip() {
        let dir = source();
        let src = dir.path().join("src");
        xattr::set(&src, "user.dir", b"d").unwrap();
        xattr::set(src.join("a.txt"), "user.test", b"hello").unwrap();
        // `cap_net_raw+ep` (VFS_CAP_REVISION_2), settable by root only.
        let cap: [u8; 20] = [
            1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ];
        let root = nix::unistd::geteuid().is_root();
        if root {
            xattr::set(src.join("a.txt"), "security.capability", &cap).unwrap();
        }
        let mut out = Vec::new();
        write_resource(&src.display().to_string(), "", &[], &mut out).unwrap();
        let mut archive = tar::Archive::new(&out[..]);
        let mut records: Vec<(String, Vec<String>)> = Vec::new();
        for e in archive.entries().unwrap() {
            let mut e = e.unwrap();
            let name = String::from_utf8_lossy(&e.path_bytes()).into_owned();
            let keys = e
                .pax_extensions()
                .unwrap()
                .map(|x| x.map(|r| r.unwrap().key().unwrap().to_string()).collect())
                .unwrap_or_default();
            records.push((name, keys));
        }
        let keys = |name: &str| records.iter().find(|(n, _)| n == name).unwrap().1.clone();
        assert_eq!(keys("src/"), ["SCHILY.xattr.user.dir"]);
        let mut expected = vec!["SCHILY.xattr.user.test"];
        if root {
            expected.insert(0, "SCHILY.xattr.security.capability");
        }
        assert_eq!(keys("src/a.txt"), expected);
        // The hard link's inode attributes went with its first name.
        assert!(keys("src/hard").is_empty());

        let target = tempfile::tempdir().unwrap();
        let ignored = extract(&mut &out[..], &target.path().display().to_string(), &[]).unwrap();
        assert!(ignored.is_empty(), "{ignored:?}");
        let copy = target.path().join("src");
        assert_eq!(
            xattr::get(&copy, "user.dir").unwrap().as_deref(),
            Some(&b"d"[..])
        );
        assert_eq!(
            xattr::get(copy.join("a.txt"), "user.test")
                .unwrap()
                .as_deref(),
            Some(&b"hello"[..])
        );
        if root {
            assert_eq!(
                xattr::get(copy.join("a.txt"), "security.capability")
                    .unwrap()
                    .as_deref(),
                Some(&cap[..])
            );
        }

        // What the kernel refuses (`user.*` on a symlink) is reported, not fatal.
        let mut b = tar::Builder::new(Vec::new());
        b.append_pax_extensions([("SCHILY.xattr.user.test", &b"x"[..])])
            .unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_path("l").unwrap();
        h.set_link_name("a").unwrap();
        h.set_size(0);
        h.set_cksum();
        b.append(&h, &[][..]).unwrap();
        let data = b.into_inner().unwrap();
        let ignored = extract(&mut &data[..], &target.path().display().to_string(), &[]).unwrap();
        assert_eq!(ignored.len(), 1, "{ignored:?}");
        assert!(ignored[0].starts_with("user.test on "), "{ignored:?}");
    }

    #[test]
    fn renames_replace_the_first_occurrence() {
        let r = Rename {
            old: ".".into(),
            new: "new".into(),
        };
        assert_eq!(r.apply("./a.b"), "new/a.b");
        let root = Rename {
            old: "/".into(),
            new: "x".into(),
        };
        assert_eq!(root.apply("/a"), "x/a");
    }
}
