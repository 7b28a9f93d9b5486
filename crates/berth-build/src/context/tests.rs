use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;

use super::*;

fn write(root: &Path, path: &str, content: &str) {
    let full = root.join(path);
    fs::create_dir_all(full.parent().unwrap()).unwrap();
    fs::write(full, content).unwrap();
}

fn sample() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "package.json", "{\"name\":\"app\"}");
    write(root, "package-lock.json", "{}");
    write(root, "src/index.js", "console.log(1)");
    write(root, "src/lib/util.js", "exports.x = 1");
    write(root, "src/lib/util.test.js", "test()");
    write(root, "src-extra/readme.txt", "sibling sorting after src/");
    write(root, "README.md", "# app");
    write(root, "docs/guide.md", "guide");
    write(root, "docs/keep.md", "keep");
    write(root, "node_modules/dep/index.js", "dep");
    write(root, ".git/HEAD", "ref: refs/heads/main");
    write(root, "logs/a/b/debug.log", "log");
    dir
}

fn paths(entries: &[&ContextEntry]) -> Vec<String> {
    entries.iter().map(|e| e.path.clone()).collect()
}

fn ignore(text: &str) -> IgnoreMatcher {
    IgnoreMatcher::from_dockerignore(text).unwrap()
}

#[test]
fn scan_honours_dockerignore_with_exceptions_and_double_star() {
    let dir = sample();
    let index = ContextIndex::scan(
        dir.path(),
        &ignore(".git\nnode_modules\n**/*.log\ndocs\n!docs/keep.md\n"),
    )
    .unwrap();
    let all: Vec<&str> = index.entries().iter().map(|e| e.path.as_str()).collect();
    assert!(
        all.contains(&"docs"),
        "parent of a re-included file is kept: {all:?}"
    );
    assert!(all.contains(&"docs/keep.md"));
    assert!(!all.contains(&"docs/guide.md"));
    assert!(
        !all.iter()
            .any(|p| p.starts_with(".git") || p.starts_with("node_modules"))
    );
    assert!(!all.contains(&"logs/a/b/debug.log"));
    assert!(all.contains(&"src/lib/util.js"));
}

#[test]
fn selection_of_files_dirs_wildcards_and_excludes() {
    let dir = sample();
    let index = ContextIndex::scan(dir.path(), &IgnoreMatcher::default()).unwrap();
    let sel = index.select(&["package*.json".into()], &[]).unwrap();
    assert_eq!(paths(&sel), vec!["package-lock.json", "package.json"]);
    let sel = index
        .select(&["./src".into()], &["**/*.test.js".into()])
        .unwrap();
    assert_eq!(
        paths(&sel),
        vec!["src", "src/index.js", "src/lib", "src/lib/util.js"]
    );
    // Like .dockerignore, `*` stays within one directory level of the source.
    let sel = index.select(&["src".into()], &["*.js".into()]).unwrap();
    assert_eq!(
        paths(&sel),
        vec!["src", "src/lib", "src/lib/util.js", "src/lib/util.test.js"]
    );
    let sel = index.select(&["src/**/*.js".into()], &[]).unwrap();
    assert_eq!(
        paths(&sel),
        vec!["src/index.js", "src/lib/util.js", "src/lib/util.test.js"]
    );
    assert!(matches!(
        index.select(&["missing.txt".into()], &[]),
        Err(ContextError::SourceNotFound(_))
    ));
    assert!(matches!(
        index.select(&["*.none".into()], &[]),
        Err(ContextError::NoMatch(_))
    ));
    assert!(matches!(
        index.select(&["../etc".into()], &[]),
        Err(ContextError::OutsideContext(_))
    ));
    let everything = index.select(&[".".into()], &[]).unwrap();
    assert_eq!(everything.len(), index.entries().len());
}

#[test]
fn copy_key_ignores_unrelated_files_and_follows_selected_ones() {
    let dir = sample();
    let root = dir.path();
    let digest = |sources: &[&str]| {
        let index = ContextIndex::scan(root, &IgnoreMatcher::default()).unwrap();
        let sources: Vec<String> = sources.iter().map(|s| s.to_string()).collect();
        index.sources_digest(&sources, &[]).unwrap()
    };
    let pkg = digest(&["package.json"]);
    let src = digest(&["src"]);
    write(root, "README.md", "# changed");
    write(root, "src-extra/readme.txt", "changed sibling");
    assert_eq!(digest(&["package.json"]), pkg);
    assert_eq!(digest(&["src"]), src);
    write(root, "src/lib/util.js", "exports.x = 2");
    assert_ne!(digest(&["src"]), src);
    assert_eq!(digest(&["package.json"]), pkg);
    fs::set_permissions(root.join("package.json"), fs::Permissions::from_mode(0o600)).unwrap();
    assert_ne!(digest(&["package.json"]), pkg, "mode is part of the key");
    write(root, "src/new.js", "new");
    let with_new = digest(&["src"]);
    fs::rename(root.join("src/new.js"), root.join("src/renamed.js")).unwrap();
    assert_ne!(digest(&["src"]), with_new, "names are part of the key");
}

#[test]
fn symlinks_out_of_the_context_are_never_followed() {
    let dir = sample();
    let root = dir.path();
    let outside = tempfile::tempdir().unwrap();
    write(outside.path(), "secret.txt", "host secret");
    symlink(outside.path().join("secret.txt"), root.join("leak")).unwrap();
    symlink(outside.path(), root.join("leakdir")).unwrap();
    symlink("../../..", root.join("src/up")).unwrap();
    symlink("src/index.js", root.join("inside")).unwrap();
    let index = ContextIndex::scan(root, &IgnoreMatcher::default()).unwrap();
    assert!(matches!(
        index.get("leak").unwrap().kind,
        EntryKind::Symlink { .. }
    ));
    assert!(
        index.get("leakdir/secret.txt").is_none(),
        "the walk does not enter linked directories"
    );
    assert!(matches!(
        index.select(&["leak".into()], &[]),
        Err(ContextError::SourceNotFound(_))
    ));
    assert!(matches!(
        index.select(&["leakdir/secret.txt".into()], &[]),
        Err(ContextError::SourceNotFound(_))
    ));
    let up = index.select(&["src/up".into()], &[]).unwrap();
    assert!(up.iter().all(|e| !e.path.contains("secret")));
    let sel = index.select(&["inside".into()], &[]).unwrap();
    assert_eq!(paths(&sel), vec!["inside", "src/index.js"]);
    // Hashing the whole context hashes the links themselves, not their targets.
    let all = index.select(&[".".into()], &[]).unwrap();
    let before = index.digest_of(&all).unwrap();
    write(outside.path(), "secret.txt", "changed host secret");
    let index = ContextIndex::scan(root, &IgnoreMatcher::default()).unwrap();
    let all = index.select(&[".".into()], &[]).unwrap();
    assert_eq!(index.digest_of(&all).unwrap(), before);
}

#[test]
fn path_order_keeps_subtrees_together() {
    let mut v = vec!["a-b", "a/b", "a", "a.txt", "a/b/c", "b"];
    v.sort_by(|x, y| path_cmp(x, y));
    assert_eq!(v, vec!["a", "a/b", "a/b/c", "a-b", "a.txt", "b"]);
}

/// A cache that counts what it is asked.
#[derive(Debug, Default)]
struct CountingCache {
    digests: std::sync::Mutex<std::collections::HashMap<FileStamp, [u8; 32]>>,
    hits: std::sync::atomic::AtomicUsize,
}

impl DigestCache for CountingCache {
    fn get(&self, stamp: &FileStamp) -> Option<[u8; 32]> {
        let found = self.digests.lock().unwrap().get(stamp).copied();
        if found.is_some() {
            self.hits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        found
    }
    fn put(&self, stamp: FileStamp, digest: [u8; 32]) {
        self.digests.lock().unwrap().insert(stamp, digest);
    }
}

#[test]
fn digest_cache_skips_old_unchanged_files_and_never_trusts_fresh_ones() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "old.txt", "old content");
    write(dir.path(), "fresh.txt", "fresh");
    // Age one file past the racy window.
    let old = dir.path().join("old.txt");
    let past = std::time::SystemTime::now() - std::time::Duration::from_secs(10);
    std::fs::File::options()
        .write(true)
        .open(&old)
        .unwrap()
        .set_modified(past)
        .unwrap();
    let cache = std::sync::Arc::new(CountingCache::default());
    let digest = |cache: &std::sync::Arc<CountingCache>| {
        let index = ContextIndex::scan(dir.path(), &IgnoreMatcher::default())
            .unwrap()
            .with_digest_cache(cache.clone());
        index.sources_digest(&[".".to_string()], &[]).unwrap()
    };
    let first = digest(&cache);
    // The ctime of both files is fresh (set_modified changes it), so nothing is trusted yet.
    assert_eq!(cache.digests.lock().unwrap().len(), 0);
    assert_eq!(digest(&cache), first);
    // A stamp the cache holds answers without reading: a wrong digest planted for the
    // file's real stamp shows through.
    let index = ContextIndex::scan(dir.path(), &IgnoreMatcher::default()).unwrap();
    let stamp = index.get("old.txt").unwrap().stamp;
    cache.put(stamp, [7; 32]);
    let planted = digest(&cache);
    assert_ne!(planted, first);
    assert_eq!(cache.hits.load(std::sync::atomic::Ordering::Relaxed), 1);
    // Changing the file changes its stamp, so the planted digest is no longer used.
    write(dir.path(), "old.txt", "new content");
    assert_ne!(digest(&cache), planted);
}
