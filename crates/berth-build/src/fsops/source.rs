//! Which entries of a source directory a COPY/ADD source pattern names.
//!
//! As BuildKit does: the part of a pattern before its first wildcard
//! component is resolved following symlinks (inside the source root), the
//! rest is matched component by component against the directories as they
//! are (Go `filepath.Match` rules per component), and a matched symlink is
//! followed. With `--parents` nothing after the optional `/./` pivot is
//! followed: entries keep their physical path from the pivot, and a `**`
//! component matches any number of directories.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::os::fd::OwnedFd;
use std::path::Path;

use crate::context::Glob;

use super::FsOpsError;
use super::root::{Root, is_dir, list_dir, lstat_at, open_dir_at, stat_entry, sys_error};

/// What `.dockerignore` and `--exclude` left of a source: nothing else may be copied.
#[derive(Debug)]
pub(super) struct Selection {
    /// The selected paths.
    paths: HashSet<String>,
    /// Every directory above a selected path (entered even when not selected
    /// itself, to reach re-included files).
    above: HashSet<String>,
}

impl Selection {
    pub fn new(selected: &[String]) -> Selection {
        let mut above = HashSet::new();
        for path in selected {
            let mut end = path.len();
            while let Some(slash) = path[..end].rfind('/') {
                if !above.insert(path[..slash].to_string()) {
                    break;
                }
                end = slash;
            }
        }
        Selection {
            paths: selected.iter().cloned().collect(),
            above,
        }
    }

    fn allows(&self, rel: &str, is_dir: bool) -> bool {
        self.paths.contains(rel) || (is_dir && self.above.contains(rel))
    }
}

/// A directory files are copied from (the build context, or a stage's rootfs).
#[derive(Debug)]
pub(super) struct SourceDir {
    /// The directory, as the root its symlinks resolve in.
    pub root: Root,
    /// What may be copied; everything when `None`.
    pub selection: Option<Selection>,
    /// Keep the owners of the source files (a `--from` stage) instead of 0:0.
    pub keep_owner: bool,
}

impl SourceDir {
    pub fn open(
        base: &Path,
        selected: Option<&[String]>,
        keep_owner: bool,
    ) -> Result<Self, FsOpsError> {
        Ok(SourceDir {
            root: Root::open(base, "")?,
            selection: selected.map(Selection::new),
            keep_owner,
        })
    }

    /// Whether the entry at `phys` (from the source root) may be copied.
    pub fn allows(&self, phys: &[OsString], is_dir: bool) -> bool {
        let Some(selection) = &self.selection else {
            return true;
        };
        if phys.is_empty() {
            return true;
        }
        let mut rel = String::new();
        for part in phys {
            let Some(part) = part.to_str() else {
                return false;
            };
            if !rel.is_empty() {
                rel.push('/');
            }
            rel.push_str(part);
        }
        selection.allows(&rel, is_dir)
    }
}

/// One entry a source pattern names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Matched {
    /// Its physical path from the source root (empty for the root itself).
    pub phys: Vec<OsString>,
    /// The name it takes inside a destination directory: its name as written
    /// or matched (a followed symlink keeps the link's name).
    pub name: OsString,
    /// With `--parents`: its path under the destination.
    pub under_dest: Option<Vec<OsString>>,
}

/// Whether a path component has a wildcard (`*`, `?`, `[`), `\` escaping the next byte.
fn has_wildcards(part: &str) -> bool {
    let bytes = part.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 1,
            b'*' | b'?' | b'[' => return true,
            _ => {}
        }
        i += 1;
    }
    false
}

/// Cleans a source path into components. `..` is resolved lexically; for a
/// relative path it may not climb above the source root (rooted ones stop at
/// the root, as Docker does for `--from` paths).
fn clean(pattern: &str, text: &str, rooted: bool) -> Result<Vec<String>, FsOpsError> {
    let rooted = rooted || text.starts_with('/');
    let mut parts: Vec<String> = Vec::new();
    for part in text.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() && !rooted {
                    return Err(FsOpsError::OutsideContext(pattern.to_string()));
                }
            }
            part => parts.push(part.to_string()),
        }
    }
    Ok(parts)
}

fn os(parts: &[String]) -> Vec<OsString> {
    parts.iter().map(OsString::from).collect()
}

/// Maps "a directory on the way is missing" to "this source is not found".
fn not_found_as(pattern: &str) -> impl FnOnce(FsOpsError) -> FsOpsError + '_ {
    move |err| match err {
        FsOpsError::NotFound(_) | FsOpsError::NotADirectory(_) => {
            FsOpsError::SourceNotFound(pattern.to_string())
        }
        other => other,
    }
}

/// The entries `pattern` names in `dir`, in order.
pub(super) fn expand(
    dir: &SourceDir,
    pattern: &str,
    parents: bool,
) -> Result<Vec<Matched>, FsOpsError> {
    if parents {
        return expand_parents(dir, pattern);
    }
    let parts = clean(pattern, pattern, false)?;
    let Some(first_wild) = parts.iter().position(|p| has_wildcards(p)) else {
        let resolved = dir
            .root
            .walk(&os(&parts), true, None)
            .map_err(not_found_as(pattern))?;
        let st = stat_entry(&resolved.dir, resolved.name.as_deref())
            .map_err(sys_error("inspecting source", pattern))?
            .ok_or_else(|| FsOpsError::SourceNotFound(pattern.to_string()))?;
        if !dir.allows(&resolved.phys, is_dir(&st)) {
            return Err(FsOpsError::SourceNotFound(pattern.to_string()));
        }
        let name = parts
            .last()
            .map_or_else(|| OsString::from("."), OsString::from);
        return Ok(vec![Matched {
            phys: resolved.phys,
            name,
            under_dest: None,
        }]);
    };

    let no_match = || FsOpsError::NoMatch(pattern.to_string());
    let prefix = match dir.root.walk(&os(&parts[..first_wild]), true, None) {
        Ok(prefix) => prefix,
        Err(FsOpsError::NotFound(_) | FsOpsError::NotADirectory(_)) => return Err(no_match()),
        Err(e) => return Err(e),
    };
    let Some(start) = enter(&prefix.dir, prefix.name.as_deref(), pattern)? else {
        return Err(no_match());
    };
    let mut found = Vec::new();
    let mut here = prefix.phys.clone();
    match_physical(
        &start,
        &mut here,
        &parts[first_wild..],
        false,
        pattern,
        &mut found,
    )?;
    if found.is_empty() {
        return Err(no_match());
    }
    let mut matched = Vec::new();
    for phys in found {
        let shown = super::root::join(&phys);
        // BuildKit follows a matched symlink (inside the source root).
        let resolved = dir
            .root
            .walk(&phys, true, None)
            .map_err(not_found_as(&shown))?;
        let st = stat_entry(&resolved.dir, resolved.name.as_deref())
            .map_err(sys_error("inspecting source", &shown))?
            .ok_or_else(|| FsOpsError::SourceNotFound(shown.clone()))?;
        if !dir.allows(&resolved.phys, is_dir(&st)) {
            continue;
        }
        let name = phys.last().cloned().unwrap_or_else(|| OsString::from("."));
        matched.push(Matched {
            phys: resolved.phys,
            name,
            under_dest: None,
        });
    }
    Ok(matched)
}

/// `--parents`: the path after the pivot (`/./`, or the whole source) is
/// kept under the destination.
fn expand_parents(dir: &SourceDir, pattern: &str) -> Result<Vec<Matched>, FsOpsError> {
    let (pivot, rest) = pattern.split_once("/./").unwrap_or(("", pattern));
    let pivot_parts = clean(pattern, pivot, false)?;
    let rest_parts = clean(pattern, rest, true)?;
    let wild =
        rest_parts.iter().any(|p| has_wildcards(p)) || pivot_parts.iter().any(|p| has_wildcards(p));
    let pivot = dir
        .root
        .walk(&os(&pivot_parts), true, None)
        .map_err(not_found_as(pattern))?;
    let Some(start) = enter(&pivot.dir, pivot.name.as_deref(), pattern)? else {
        return Err(FsOpsError::SourceNotFound(pattern.to_string()));
    };
    let mut found = Vec::new();
    let mut here = pivot.phys.clone();
    match_physical(&start, &mut here, &rest_parts, true, pattern, &mut found)?;
    // A `**` can reach one entry twice, or an entry and something inside it
    // (which the copy of the outer one includes already).
    found.sort();
    found.dedup();
    let mut kept: Vec<Vec<OsString>> = Vec::new();
    for phys in found {
        if kept.last().is_some_and(|k| phys.starts_with(k)) {
            continue;
        }
        kept.push(phys);
    }
    let mut matched = Vec::new();
    for phys in kept {
        let shown = super::root::join(&phys);
        let resolved = dir
            .root
            .walk(&phys, false, None)
            .map_err(not_found_as(&shown))?;
        let Some(st) = stat_entry(&resolved.dir, resolved.name.as_deref())
            .map_err(sys_error("inspecting source", &shown))?
        else {
            continue;
        };
        if !dir.allows(&phys, is_dir(&st)) {
            continue;
        }
        let under = phys[pivot.phys.len()..].to_vec();
        let name = phys.last().cloned().unwrap_or_else(|| OsString::from("."));
        matched.push(Matched {
            phys,
            name,
            under_dest: Some(under),
        });
    }
    if matched.is_empty() {
        return Err(if wild {
            FsOpsError::NoMatch(pattern.to_string())
        } else {
            FsOpsError::SourceNotFound(pattern.to_string())
        });
    }
    Ok(matched)
}

/// Opens the directory a walk ended on; `None` when it is missing or not a directory.
fn enter(
    dir: &OwnedFd,
    name: Option<&OsStr>,
    pattern: &str,
) -> Result<Option<OwnedFd>, FsOpsError> {
    let Some(name) = name else {
        return dir
            .try_clone()
            .map(Some)
            .map_err(super::root::io_error("duplicating descriptor for", pattern));
    };
    match lstat_at(dir, name).map_err(sys_error("inspecting source", pattern))? {
        Some(st) if is_dir(&st) => open_dir_at(dir, name)
            .map(Some)
            .map_err(sys_error("opening source", pattern)),
        _ => Ok(None),
    }
}

/// Matches `parts` below `dir` (whose physical path is `here`) without
/// following symlinks, pushing the physical path of every match.
fn match_physical(
    dir: &OwnedFd,
    here: &mut Vec<OsString>,
    parts: &[String],
    parents: bool,
    pattern: &str,
    found: &mut Vec<Vec<OsString>>,
) -> Result<(), FsOpsError> {
    let Some((first, rest)) = parts.split_first() else {
        found.push(here.clone());
        return Ok(());
    };
    let shown = |here: &[OsString]| super::root::join(here);
    if parents && first == "**" {
        match_physical(dir, here, rest, parents, pattern, found)?;
        for name in list_dir(dir).map_err(sys_error("listing source", &shown(here)))? {
            let Some(st) =
                lstat_at(dir, &name).map_err(sys_error("inspecting source", &shown(here)))?
            else {
                continue;
            };
            if is_dir(&st) {
                let sub =
                    open_dir_at(dir, &name).map_err(sys_error("opening source", &shown(here)))?;
                here.push(name);
                match_physical(&sub, here, parts, parents, pattern, found)?;
                here.pop();
            }
        }
        return Ok(());
    }
    if !has_wildcards(first) {
        return visit(dir, here, OsStr::new(first), rest, parents, pattern, found);
    }
    let glob = Glob::new(first).map_err(|e| FsOpsError::BadPattern {
        pattern: pattern.to_string(),
        message: e.to_string(),
    })?;
    for name in list_dir(dir).map_err(sys_error("listing source", &shown(here)))? {
        if name.to_str().is_some_and(|n| glob.matches(n)) {
            visit(dir, here, &name, rest, parents, pattern, found)?;
        }
    }
    Ok(())
}

fn visit(
    dir: &OwnedFd,
    here: &mut Vec<OsString>,
    name: &OsStr,
    rest: &[String],
    parents: bool,
    pattern: &str,
    found: &mut Vec<Vec<OsString>>,
) -> Result<(), FsOpsError> {
    let Some(st) = lstat_at(dir, name).map_err(sys_error("inspecting source", pattern))? else {
        return Ok(());
    };
    here.push(name.to_os_string());
    if rest.is_empty() {
        found.push(here.clone());
    } else if is_dir(&st) {
        let sub = open_dir_at(dir, name).map_err(sys_error("opening source", pattern))?;
        match_physical(&sub, here, rest, parents, pattern, found)?;
    }
    here.pop();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_detection_honours_escapes() {
        assert!(has_wildcards("*.txt"));
        assert!(has_wildcards("a?c"));
        assert!(has_wildcards("arr[[]0].txt"));
        assert!(!has_wildcards("plain.txt"));
        assert!(!has_wildcards("a\\*b"));
    }

    #[test]
    fn cleaning_refuses_to_climb_out_of_relative_sources() {
        assert_eq!(clean("p", "./a//b/./c/", false).unwrap(), ["a", "b", "c"]);
        assert_eq!(clean("p", "a/../b", false).unwrap(), ["b"]);
        assert!(matches!(
            clean("../x", "../x", false),
            Err(FsOpsError::OutsideContext(p)) if p == "../x"
        ));
        assert_eq!(clean("/../x", "/../x", false).unwrap(), ["x"]);
    }

    #[test]
    fn selection_allows_selected_paths_and_directories_above_them() {
        let selection = Selection::new(&["a/b/c.txt".to_string(), "d".to_string()]);
        assert!(selection.allows("a/b/c.txt", false));
        assert!(selection.allows("a", true));
        assert!(selection.allows("a/b", true));
        assert!(!selection.allows("a/b", false));
        assert!(selection.allows("d", false));
        assert!(!selection.allows("a/b/other.txt", false));
    }
}
