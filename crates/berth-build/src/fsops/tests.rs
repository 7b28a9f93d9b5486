use super::*;

use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};

/// A build context, a destination root and a directory beside them holding
/// a secret that no copy may read or overwrite.
struct Fixture {
    tmp: tempfile::TempDir,
    ctx: PathBuf,
    root: PathBuf,
    outside: PathBuf,
}

const SECRET: &str = "host secret";

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let ctx = tmp.path().join("ctx");
    let root = tmp.path().join("root");
    let outside = tmp.path().join("outside");
    for dir in [&ctx, &root, &outside] {
        fs::create_dir(dir).unwrap();
    }
    fs::write(outside.join("secret"), SECRET).unwrap();
    Fixture {
        tmp,
        ctx,
        root,
        outside,
    }
}

impl Fixture {
    /// Nothing but the three directories beside each other, and the secret untouched.
    fn assert_outside_untouched(&self) {
        let mut names: Vec<String> = fs::read_dir(self.tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["ctx", "outside", "root"]);
        let outside: Vec<_> = fs::read_dir(&self.outside).unwrap().collect();
        assert_eq!(outside.len(), 1);
        assert_eq!(
            fs::read_to_string(self.outside.join("secret")).unwrap(),
            SECRET
        );
    }
}

fn write(path: &Path, content: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, content).unwrap();
}

fn set_mtime(path: &Path, secs: i64) {
    let t = nix::sys::time::TimeSpec::new(secs, 0);
    nix::sys::stat::utimensat(
        None,
        path,
        &t,
        &t,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .unwrap();
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn mode_of(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

fn owner_of(path: &Path) -> (u32, u32) {
    let m = fs::symlink_metadata(path).unwrap();
    (m.uid(), m.gid())
}

fn mtime_of(path: &Path) -> i64 {
    fs::symlink_metadata(path).unwrap().mtime()
}

fn dir_source<'a>(base: &'a Path, patterns: &[&str]) -> CopySource<'a> {
    CopySource::Dir {
        base,
        patterns: patterns.iter().map(|p| p.to_string()).collect(),
        selected: None,
        keep_owner: false,
    }
}

fn request<'a>(root: &'a Path, dest: &'a str, sources: Vec<CopySource<'a>>) -> CopyRequest<'a> {
    CopyRequest {
        root,
        dest,
        sources,
        owner: None,
        chmod: None,
        parents: false,
        add: false,
        epoch: None,
    }
}

fn copy(f: &Fixture, patterns: &[&str], dest: &str) -> Result<CopyStats, FsOpsError> {
    apply_copy(&request(&f.root, dest, vec![dir_source(&f.ctx, patterns)]))
}

#[test]
fn file_into_directory_keeps_mode_and_mtime_and_resets_owner() {
    let f = fixture();
    write(&f.ctx.join("app.sh"), "#!/bin/sh\n");
    chmod(&f.ctx.join("app.sh"), 0o750);
    set_mtime(&f.ctx.join("app.sh"), 1_500_000_000);
    std::os::unix::fs::chown(f.ctx.join("app.sh"), Some(1234), Some(5678)).unwrap();

    let stats = copy(&f, &["app.sh"], "/usr/local/bin/").unwrap();
    assert_eq!(
        stats,
        CopyStats {
            files: 1,
            bytes: 10
        }
    );
    let copied = f.root.join("usr/local/bin/app.sh");
    assert_eq!(fs::read_to_string(&copied).unwrap(), "#!/bin/sh\n");
    assert_eq!(mode_of(&copied), 0o750);
    assert_eq!(mtime_of(&copied), 1_500_000_000);
    assert_eq!(owner_of(&copied), (0, 0));
    // Missing parents are created 0755, owned by root.
    for dir in ["usr", "usr/local", "usr/local/bin"] {
        assert!(f.root.join(dir).is_dir());
        assert_eq!(mode_of(&f.root.join(dir)), 0o755, "{dir}");
        assert_eq!(owner_of(&f.root.join(dir)), (0, 0));
    }
}

#[test]
fn file_without_slash_becomes_the_destination_path() {
    let f = fixture();
    write(&f.ctx.join("a.txt"), "a");
    copy(&f, &["a.txt"], "/etc/renamed.conf").unwrap();
    assert_eq!(
        fs::read_to_string(f.root.join("etc/renamed.conf")).unwrap(),
        "a"
    );
    assert!(!f.root.join("etc/a.txt").exists());

    // An existing file there is replaced.
    write(&f.ctx.join("b.txt"), "b");
    copy(&f, &["b.txt"], "/etc/renamed.conf").unwrap();
    assert_eq!(
        fs::read_to_string(f.root.join("etc/renamed.conf")).unwrap(),
        "b"
    );
}

#[test]
fn file_goes_into_an_existing_directory_even_without_slash() {
    let f = fixture();
    write(&f.ctx.join("a.txt"), "a");
    fs::create_dir(f.root.join("srv")).unwrap();
    copy(&f, &["a.txt"], "/srv").unwrap();
    assert_eq!(fs::read_to_string(f.root.join("srv/a.txt")).unwrap(), "a");
}

#[test]
fn directory_contents_are_copied_with_structure_and_symlinks() {
    let f = fixture();
    write(&f.ctx.join("src/top.txt"), "top");
    write(&f.ctx.join("src/sub/deep.txt"), "deep");
    chmod(&f.ctx.join("src/sub"), 0o750);
    set_mtime(&f.ctx.join("src/sub"), 1_400_000_000);
    symlink("sub/deep.txt", f.ctx.join("src/link")).unwrap();
    symlink("/etc/passwd", f.ctx.join("src/abs-link")).unwrap();

    let stats = copy(&f, &["src"], "/app").unwrap();
    assert_eq!(stats.files, 4);
    assert_eq!(
        fs::read_to_string(f.root.join("app/top.txt")).unwrap(),
        "top"
    );
    assert_eq!(
        fs::read_to_string(f.root.join("app/sub/deep.txt")).unwrap(),
        "deep"
    );
    assert!(!f.root.join("app/src").exists());
    assert_eq!(mode_of(&f.root.join("app/sub")), 0o750);
    assert_eq!(mtime_of(&f.root.join("app/sub")), 1_400_000_000);
    // Symlinks are copied as symlinks, targets unchanged.
    assert_eq!(
        fs::read_link(f.root.join("app/link")).unwrap(),
        Path::new("sub/deep.txt")
    );
    assert_eq!(
        fs::read_link(f.root.join("app/abs-link")).unwrap(),
        Path::new("/etc/passwd")
    );
    // The destination directory itself was created 0755.
    assert_eq!(mode_of(&f.root.join("app")), 0o755);

    // `.` copies the whole context.
    let f = fixture();
    write(&f.ctx.join("x/y.txt"), "y");
    copy(&f, &["."], "/").unwrap();
    assert_eq!(fs::read_to_string(f.root.join("x/y.txt")).unwrap(), "y");
}

#[test]
fn directories_merge_and_files_are_replaced_not_written_through() {
    let f = fixture();
    write(&f.ctx.join("conf/new.conf"), "new");
    write(&f.ctx.join("conf/shared.conf"), "from context");
    write(&f.root.join("etc/app/old.conf"), "old");
    write(&f.root.join("keep"), "kept");
    // The existing file is a hard link of another image file: replacing it
    // must not change that other file.
    fs::hard_link(f.root.join("keep"), f.root.join("etc/app/shared.conf")).unwrap();
    chmod(&f.root.join("etc/app"), 0o700);

    copy(&f, &["conf"], "/etc/app/").unwrap();
    assert_eq!(
        fs::read_to_string(f.root.join("etc/app/old.conf")).unwrap(),
        "old"
    );
    assert_eq!(
        fs::read_to_string(f.root.join("etc/app/new.conf")).unwrap(),
        "new"
    );
    assert_eq!(
        fs::read_to_string(f.root.join("etc/app/shared.conf")).unwrap(),
        "from context"
    );
    assert_eq!(fs::read_to_string(f.root.join("keep")).unwrap(), "kept");
    // The existing destination directory keeps its mode.
    assert_eq!(mode_of(&f.root.join("etc/app")), 0o700);
}

#[test]
fn type_conflicts_are_errors() {
    let f = fixture();
    write(&f.ctx.join("a.txt"), "a");
    write(&f.ctx.join("dir/x"), "x");
    fs::create_dir_all(f.root.join("dst/a.txt/inner")).unwrap();
    write(&f.root.join("file"), "f");

    let err = copy(&f, &["a.txt"], "/dst/").unwrap_err();
    assert!(
        matches!(err, FsOpsError::FileOntoDir(ref p) if p == "/dst/a.txt"),
        "{err}"
    );
    assert!(err.to_string().contains("/dst/a.txt"));

    let err = copy(&f, &["dir"], "/file").unwrap_err();
    assert!(
        matches!(err, FsOpsError::DirOntoNonDir(ref p) if p == "/file"),
        "{err}"
    );

    // A file in the middle of the destination path.
    let err = copy(&f, &["a.txt"], "/file/sub/").unwrap_err();
    assert!(
        matches!(err, FsOpsError::NotADirectory(ref p) if p == "/file"),
        "{err}"
    );
}

#[test]
fn multiple_sources_need_a_destination_ending_in_slash() {
    let f = fixture();
    write(&f.ctx.join("a.txt"), "a");
    write(&f.ctx.join("b.txt"), "b");
    write(&f.ctx.join("only.md"), "m");

    let err = copy(&f, &["a.txt", "b.txt"], "/dst").unwrap_err();
    assert!(
        matches!(err, FsOpsError::DestNotDirectory { command: "COPY" }),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "when using COPY with more than one source file, the destination must be a directory and end with a /"
    );
    let err = copy(&f, &["*.txt"], "/dst").unwrap_err();
    assert!(matches!(err, FsOpsError::DestNotDirectory { .. }), "{err}");
    let mut add = request(
        &f.root,
        "/dst",
        vec![dir_source(&f.ctx, &["a.txt", "b.txt"])],
    );
    add.add = true;
    assert!(
        apply_copy(&add)
            .unwrap_err()
            .to_string()
            .starts_with("when using ADD")
    );
    // Nothing was written by the failed attempts.
    assert!(!f.root.join("dst").exists());

    // A wildcard matching a single file is fine.
    copy(&f, &["*.md"], "/dst").unwrap();
    assert_eq!(fs::read_to_string(f.root.join("dst")).unwrap(), "m");
    copy(&f, &["a.txt", "b.txt"], "/both/").unwrap();
    assert!(f.root.join("both/a.txt").is_file() && f.root.join("both/b.txt").is_file());
}

#[test]
fn wildcards_match_per_component() {
    let f = fixture();
    write(&f.ctx.join("a.txt"), "a");
    write(&f.ctx.join("b.txt"), "b");
    write(&f.ctx.join("c.md"), "c");
    write(&f.ctx.join("dir1/inner.txt"), "inner");
    write(&f.ctx.join("sub/x.txt"), "x");
    write(&f.ctx.join("sub/deeper/y.txt"), "y");
    write(&f.ctx.join("arr[0].txt"), "arr");

    copy(&f, &["*.txt"], "/t/").unwrap();
    assert!(f.root.join("t/a.txt").is_file() && f.root.join("t/b.txt").is_file());
    assert!(f.root.join("t/arr[0].txt").is_file());
    assert!(!f.root.join("t/c.md").exists());

    // A matched directory copies its contents (not the directory).
    copy(&f, &["dir?"], "/d/").unwrap();
    assert_eq!(
        fs::read_to_string(f.root.join("d/inner.txt")).unwrap(),
        "inner"
    );

    // Wildcards below a directory match one level.
    copy(&f, &["sub/*.txt"], "/s/").unwrap();
    assert!(f.root.join("s/x.txt").is_file());
    assert!(!f.root.join("s/y.txt").exists());
    copy(&f, &["*/*.txt"], "/n/").unwrap();
    assert!(f.root.join("n/inner.txt").is_file() && f.root.join("n/x.txt").is_file());

    // Brackets escape special characters.
    copy(&f, &["arr[[]0].txt"], "/e/").unwrap();
    assert_eq!(
        fs::read_to_string(f.root.join("e/arr[0].txt")).unwrap(),
        "arr"
    );
}

#[test]
fn missing_sources_fail_before_anything_is_written() {
    let f = fixture();
    write(&f.ctx.join("a.txt"), "a");

    let err = copy(&f, &["a.txt", "missing.txt"], "/dst/").unwrap_err();
    assert!(
        matches!(err, FsOpsError::SourceNotFound(ref p) if p == "missing.txt"),
        "{err}"
    );
    assert!(err.to_string().contains("missing.txt"));
    assert!(err.to_string().contains("not found"));
    assert!(!f.root.join("dst").exists());

    let err = copy(&f, &["*.nothing"], "/dst/").unwrap_err();
    assert!(
        matches!(err, FsOpsError::NoMatch(ref p) if p == "*.nothing"),
        "{err}"
    );
    let err = copy(&f, &["nodir/*.txt"], "/dst/").unwrap_err();
    assert!(matches!(err, FsOpsError::NoMatch(_)), "{err}");
    let err = copy(&f, &["a.txt/x"], "/dst/").unwrap_err();
    assert!(matches!(err, FsOpsError::SourceNotFound(_)), "{err}");
    assert_eq!(fs::read_dir(&f.root).unwrap().count(), 0);
}

#[test]
fn sources_cannot_leave_their_directory() {
    let f = fixture();
    write(&f.ctx.join("a.txt"), "a");
    let err = copy(&f, &["../outside/secret"], "/dst/").unwrap_err();
    assert!(matches!(err, FsOpsError::OutsideContext(_)), "{err}");
    assert!(err.to_string().contains("outside the build context"));
    let err = copy(&f, &["sub/../../outside/secret"], "/dst/").unwrap_err();
    assert!(matches!(err, FsOpsError::OutsideContext(_)), "{err}");

    // Symlinks pointing out of the context resolve inside it instead.
    symlink(f.outside.join("secret"), f.ctx.join("abs")).unwrap();
    symlink("../outside/secret", f.ctx.join("rel")).unwrap();
    symlink("../outside", f.ctx.join("reldir")).unwrap();
    for source in ["abs", "rel", "reldir/secret"] {
        let err = copy(&f, &[source], "/dst/").unwrap_err();
        assert!(
            matches!(err, FsOpsError::SourceNotFound(_)),
            "{source}: {err}"
        );
    }
    // Matched by a wildcard, the link is followed inside the context too.
    let err = copy(&f, &["re*"], "/w/").unwrap_err();
    assert!(matches!(err, FsOpsError::SourceNotFound(_)), "{err}");

    // Inside a copied directory such links are copied as links, unfollowed.
    fs::create_dir(f.ctx.join("tree")).unwrap();
    symlink("../../outside/secret", f.ctx.join("tree/escape")).unwrap();
    copy(&f, &["tree"], "/tree/").unwrap();
    assert!(
        fs::symlink_metadata(f.root.join("tree/escape"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    f.assert_outside_untouched();
}

#[test]
fn a_symlink_source_is_followed_inside_its_root() {
    let f = fixture();
    write(&f.ctx.join("real/file.txt"), "real file");
    write(&f.ctx.join("real/dir/in.txt"), "in dir");
    symlink("real/file.txt", f.ctx.join("file-link")).unwrap();
    symlink("/real/dir", f.ctx.join("dir-link")).unwrap();

    copy(&f, &["file-link"], "/out/").unwrap();
    let out = f.root.join("out/file-link");
    assert!(fs::symlink_metadata(&out).unwrap().is_file());
    assert_eq!(fs::read_to_string(out).unwrap(), "real file");

    copy(&f, &["dir-link"], "/d").unwrap();
    assert_eq!(
        fs::read_to_string(f.root.join("d/in.txt")).unwrap(),
        "in dir"
    );
}

#[test]
fn destination_symlinks_resolve_inside_the_root() {
    let f = fixture();
    write(&f.ctx.join("a.txt"), "payload");
    fs::create_dir_all(f.root.join("opt")).unwrap();
    fs::create_dir_all(f.root.join("usr")).unwrap();
    symlink("/opt", f.root.join("usr/local")).unwrap();
    symlink("/", f.root.join("x")).unwrap();
    symlink("../../../../../../..", f.root.join("up")).unwrap();
    // Naively followed, this would land in the directory beside the root.
    symlink("../outside", f.root.join("beside")).unwrap();
    symlink("/target.txt", f.root.join("final-link")).unwrap();

    copy(&f, &["a.txt"], "/usr/local/bin/").unwrap();
    assert_eq!(
        fs::read_to_string(f.root.join("opt/bin/a.txt")).unwrap(),
        "payload"
    );

    copy(&f, &["a.txt"], "/x/etc/escaped").unwrap();
    assert!(f.root.join("etc/escaped").is_file());

    copy(&f, &["a.txt"], "/up/tmp/").unwrap();
    assert!(f.root.join("tmp/a.txt").is_file());

    copy(&f, &["a.txt"], "/beside/secret").unwrap();
    assert_eq!(
        fs::read_to_string(f.root.join("outside/secret")).unwrap(),
        "payload"
    );

    // A symlink as the final component is followed (inside the root).
    copy(&f, &["a.txt"], "/final-link").unwrap();
    assert_eq!(
        fs::read_to_string(f.root.join("target.txt")).unwrap(),
        "payload"
    );
    assert!(
        fs::symlink_metadata(f.root.join("final-link"))
            .unwrap()
            .file_type()
            .is_symlink()
    );

    // A symlink loop is reported, not followed forever.
    symlink("/loop-b", f.root.join("loop-a")).unwrap();
    symlink("/loop-a", f.root.join("loop-b")).unwrap();
    let err = copy(&f, &["a.txt"], "/loop-a/x").unwrap_err();
    assert!(matches!(err, FsOpsError::SymlinkLoop(_)), "{err}");
    f.assert_outside_untouched();
}

#[test]
fn a_symlink_in_a_copied_tree_replaces_nothing_outside() {
    // The destination has a symlink where the source has a file: the link
    // is replaced, its target is left alone.
    let f = fixture();
    write(&f.ctx.join("tree/passwd"), "mine");
    fs::create_dir_all(f.root.join("etc")).unwrap();
    write(&f.root.join("real-passwd"), "image");
    symlink("/real-passwd", f.root.join("etc/passwd")).unwrap();
    copy(&f, &["tree"], "/etc/").unwrap();
    assert!(
        fs::symlink_metadata(f.root.join("etc/passwd"))
            .unwrap()
            .is_file()
    );
    assert_eq!(
        fs::read_to_string(f.root.join("etc/passwd")).unwrap(),
        "mine"
    );
    assert_eq!(
        fs::read_to_string(f.root.join("real-passwd")).unwrap(),
        "image"
    );
}

#[test]
fn the_selection_limits_what_is_copied() {
    let f = fixture();
    write(&f.ctx.join("src/keep.txt"), "keep");
    write(&f.ctx.join("src/skip.txt"), "skip");
    write(&f.ctx.join("src/excluded/again.txt"), "again");
    write(&f.ctx.join("secret.env"), "s");
    let selected = [
        "src".to_string(),
        "src/keep.txt".to_string(),
        "src/excluded/again.txt".to_string(),
    ];
    let source = |patterns: &[&str]| CopySource::Dir {
        base: &f.ctx,
        patterns: patterns.iter().map(|p| p.to_string()).collect(),
        selected: Some(&selected),
        keep_owner: false,
    };
    apply_copy(&request(&f.root, "/app/", vec![source(&["src"])])).unwrap();
    assert!(f.root.join("app/keep.txt").is_file());
    assert!(!f.root.join("app/skip.txt").exists());
    // A directory left out but holding a selected file is entered.
    assert!(f.root.join("app/excluded/again.txt").is_file());

    let err = apply_copy(&request(&f.root, "/app/", vec![source(&["secret.env"])])).unwrap_err();
    assert!(matches!(err, FsOpsError::SourceNotFound(_)), "{err}");
    // Wildcard matches outside the selection are skipped.
    apply_copy(&request(&f.root, "/w/", vec![source(&["src/*.txt"])])).unwrap();
    assert!(f.root.join("w/keep.txt").is_file());
    assert!(!f.root.join("w/skip.txt").exists());
}

#[test]
fn parents_keep_the_source_paths() {
    let f = fixture();
    write(&f.ctx.join("x/a.txt"), "xa");
    write(&f.ctx.join("y/a.txt"), "ya");
    write(&f.ctx.join("p/q/b.txt"), "b");
    write(&f.ctx.join("p/q/c.md"), "c");
    write(&f.ctx.join("src/a.txt"), "1");
    write(&f.ctx.join("src/x/b.txt"), "2");
    write(&f.ctx.join("src/x/y/c.txt"), "3");
    write(&f.ctx.join("src/x/y/skip.md"), "4");
    chmod(&f.ctx.join("x"), 0o711);
    set_mtime(&f.ctx.join("x"), 1_300_000_000);

    let mut req = request(
        &f.root,
        "/parents",
        vec![dir_source(&f.ctx, &["./x/a.txt", "y/a.txt"])],
    );
    req.parents = true;
    apply_copy(&req).unwrap();
    assert_eq!(
        fs::read_to_string(f.root.join("parents/x/a.txt")).unwrap(),
        "xa"
    );
    assert_eq!(
        fs::read_to_string(f.root.join("parents/y/a.txt")).unwrap(),
        "ya"
    );
    // The created parent copies the source directory's metadata.
    assert_eq!(mode_of(&f.root.join("parents/x")), 0o711);
    assert_eq!(mtime_of(&f.root.join("parents/x")), 1_300_000_000);

    // A `/./` pivot keeps only what follows it.
    let mut req = request(
        &f.root,
        "/pivot/",
        vec![dir_source(&f.ctx, &["p/./q/*.txt"])],
    );
    req.parents = true;
    apply_copy(&req).unwrap();
    assert!(f.root.join("pivot/q/b.txt").is_file());
    assert!(!f.root.join("pivot/q/c.md").exists());
    assert!(!f.root.join("pivot/p").exists());

    // `**` matches any number of directories.
    let mut req = request(
        &f.root,
        "/deep/",
        vec![dir_source(&f.ctx, &["src/**/*.txt"])],
    );
    req.parents = true;
    apply_copy(&req).unwrap();
    for (path, content) in [
        ("src/a.txt", "1"),
        ("src/x/b.txt", "2"),
        ("src/x/y/c.txt", "3"),
    ] {
        assert_eq!(
            fs::read_to_string(f.root.join("deep").join(path)).unwrap(),
            content
        );
    }
    assert!(!f.root.join("deep/src/x/y/skip.md").exists());

    // Without --parents the same sources collide on their names.
    copy(&f, &["x/a.txt", "y/a.txt"], "/flat/").unwrap();
    assert_eq!(fs::read_to_string(f.root.join("flat/a.txt")).unwrap(), "ya");

    let mut req = request(&f.root, "/p/", vec![dir_source(&f.ctx, &["x/missing.txt"])]);
    req.parents = true;
    assert!(matches!(
        apply_copy(&req),
        Err(FsOpsError::SourceNotFound(_))
    ));
}

#[test]
fn chmod_applies_to_copied_files_and_directories() {
    let f = fixture();
    write(&f.ctx.join("tree/plain.txt"), "p");
    write(&f.ctx.join("tree/run.sh"), "r");
    write(&f.ctx.join("tree/sub/x"), "x");
    chmod(&f.ctx.join("tree/plain.txt"), 0o600);
    chmod(&f.ctx.join("tree/run.sh"), 0o700);
    chmod(&f.ctx.join("tree/sub"), 0o700);

    let mut req = request(&f.root, "/octal/", vec![dir_source(&f.ctx, &["tree"])]);
    req.chmod = Some(parse_chmod("640").unwrap());
    apply_copy(&req).unwrap();
    assert_eq!(mode_of(&f.root.join("octal/plain.txt")), 0o640);
    assert_eq!(mode_of(&f.root.join("octal/run.sh")), 0o640);
    assert_eq!(mode_of(&f.root.join("octal/sub")), 0o640);
    // The implicitly created destination stays 0755.
    assert_eq!(mode_of(&f.root.join("octal")), 0o755);

    let mut req = request(&f.root, "/sym/", vec![dir_source(&f.ctx, &["tree"])]);
    req.chmod = Some(parse_chmod("u=rwX,go=rX").unwrap());
    apply_copy(&req).unwrap();
    assert_eq!(mode_of(&f.root.join("sym/plain.txt")), 0o644);
    assert_eq!(mode_of(&f.root.join("sym/run.sh")), 0o755);
    assert_eq!(mode_of(&f.root.join("sym/sub")), 0o755);
}

#[test]
fn chown_owns_copied_entries_and_created_parents() {
    let f = fixture();
    write(
        &f.root.join("etc/passwd"),
        "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n",
    );
    write(
        &f.root.join("etc/group"),
        "root:x:0:\napp:x:1001:\nstaff:x:50:\n",
    );
    write(&f.ctx.join("tree/f"), "f");
    symlink("f", f.ctx.join("tree/link")).unwrap();
    fs::create_dir(f.root.join("existing")).unwrap();

    let mut req = request(
        &f.root,
        "/existing/new/dir/",
        vec![dir_source(&f.ctx, &["tree"])],
    );
    req.owner = Some(resolve_owner(&f.root, "app:staff").unwrap());
    apply_copy(&req).unwrap();
    assert_eq!(owner_of(&f.root.join("existing/new/dir/f")), (1000, 50));
    assert_eq!(owner_of(&f.root.join("existing/new/dir/link")), (1000, 50));
    assert_eq!(owner_of(&f.root.join("existing/new")), (1000, 50));
    assert_eq!(owner_of(&f.root.join("existing/new/dir")), (1000, 50));
    // A directory that was already there keeps its owner.
    assert_eq!(owner_of(&f.root.join("existing")), (0, 0));
}

#[test]
fn stage_sources_keep_their_owners_unless_chowned() {
    let f = fixture();
    write(&f.ctx.join("bin/tool"), "t");
    std::os::unix::fs::chown(f.ctx.join("bin/tool"), Some(4242), Some(4343)).unwrap();
    let stage = |keep_owner| CopySource::Dir {
        base: &f.ctx,
        patterns: vec!["/bin/tool".to_string()],
        selected: None,
        keep_owner,
    };
    apply_copy(&request(&f.root, "/kept", vec![stage(true)])).unwrap();
    assert_eq!(owner_of(&f.root.join("kept")), (4242, 4343));
    apply_copy(&request(&f.root, "/reset", vec![stage(false)])).unwrap();
    assert_eq!(owner_of(&f.root.join("reset")), (0, 0));
    let mut req = request(&f.root, "/chowned", vec![stage(true)]);
    req.owner = Some((7, 8));
    apply_copy(&req).unwrap();
    assert_eq!(owner_of(&f.root.join("chowned")), (7, 8));
}

#[test]
fn epoch_clamps_mtimes_of_everything_created() {
    let f = fixture();
    write(&f.ctx.join("tree/new.txt"), "n");
    write(&f.ctx.join("tree/old.txt"), "o");
    set_mtime(&f.ctx.join("tree/new.txt"), 2_000_000_000);
    set_mtime(&f.ctx.join("tree/old.txt"), 900_000_000);
    fs::create_dir(f.root.join("existing")).unwrap();
    set_mtime(&f.root.join("existing"), 800_000_000);

    let mut req = request(
        &f.root,
        "/existing/made/",
        vec![dir_source(&f.ctx, &["tree"])],
    );
    req.epoch = Some(1_000_000_000);
    req.sources.push(CopySource::Bytes {
        name: "inline".to_string(),
        content: b"i".to_vec(),
        mode: 0o644,
        mtime: None,
    });
    apply_copy(&req).unwrap();
    assert_eq!(
        mtime_of(&f.root.join("existing/made/new.txt")),
        1_000_000_000
    );
    assert_eq!(mtime_of(&f.root.join("existing/made/old.txt")), 900_000_000);
    assert_eq!(
        mtime_of(&f.root.join("existing/made/inline")),
        1_000_000_000
    );
    assert_eq!(mtime_of(&f.root.join("existing/made")), 1_000_000_000);
    // The existing parent got a new entry: its mtime is clamped too.
    assert_eq!(mtime_of(&f.root.join("existing")), 1_000_000_000);
}

#[test]
fn bytes_sources_follow_the_file_rules() {
    let f = fixture();
    let heredoc = |name: &str, mode| CopySource::Bytes {
        name: name.to_string(),
        content: b"echo hi\n".to_vec(),
        mode,
        mtime: Some(1_234_567_890),
    };
    apply_copy(&request(
        &f.root,
        "/scripts/",
        vec![heredoc("run.sh", 0o644)],
    ))
    .unwrap();
    let path = f.root.join("scripts/run.sh");
    assert_eq!(fs::read_to_string(&path).unwrap(), "echo hi\n");
    assert_eq!(mode_of(&path), 0o644);
    assert_eq!(mtime_of(&path), 1_234_567_890);
    assert_eq!(owner_of(&path), (0, 0));

    let mut req = request(&f.root, "/usr/bin/hello", vec![heredoc("EOF", 0o644)]);
    req.chmod = Some(parse_chmod("755").unwrap());
    req.owner = Some((3, 4));
    apply_copy(&req).unwrap();
    let path = f.root.join("usr/bin/hello");
    assert_eq!(mode_of(&path), 0o755);
    assert_eq!(owner_of(&path), (3, 4));

    let err = apply_copy(&request(&f.root, "/x/", vec![heredoc("../evil", 0o644)])).unwrap_err();
    assert!(matches!(err, FsOpsError::InvalidName(_)), "{err}");
    let err = apply_copy(&request(
        &f.root,
        "/x",
        vec![heredoc("a", 0o644), heredoc("b", 0o644)],
    ))
    .unwrap_err();
    assert!(matches!(err, FsOpsError::DestNotDirectory { .. }), "{err}");
}

#[test]
fn special_files_are_recreated() {
    let f = fixture();
    fs::create_dir(f.ctx.join("dev")).unwrap();
    nix::unistd::mkfifo(
        &f.ctx.join("dev/pipe"),
        nix::sys::stat::Mode::from_bits_truncate(0o640),
    )
    .unwrap();
    copy(&f, &["dev"], "/run/").unwrap();
    let meta = fs::symlink_metadata(f.root.join("run/pipe")).unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_fifo(&meta.file_type()));
    assert_eq!(meta.mode() & 0o7777, 0o640);
}

// ---- ADD: archives ----

/// A tar with a directory, a file owned by 1234:5678, a symlink, a hard
/// link and a whiteout-named file.
fn sample_tar() -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut dir = tar::Header::new_gnu();
    dir.set_entry_type(tar::EntryType::Directory);
    dir.set_mode(0o750);
    dir.set_mtime(1_111_111_111);
    dir.set_size(0);
    builder
        .append_data(&mut dir, "pkg/", std::io::empty())
        .unwrap();
    let mut file = tar::Header::new_gnu();
    file.set_mode(0o4755);
    file.set_uid(1234);
    file.set_gid(5678);
    file.set_mtime(1_222_222_222);
    file.set_size(5);
    builder
        .append_data(&mut file, "pkg/bin/tool", &b"tool\n"[..])
        .unwrap();
    let mut link = tar::Header::new_gnu();
    link.set_entry_type(tar::EntryType::Symlink);
    link.set_size(0);
    link.set_mode(0o777);
    builder
        .append_link(&mut link, "pkg/latest", "bin/tool")
        .unwrap();
    let mut hard = tar::Header::new_gnu();
    hard.set_entry_type(tar::EntryType::Link);
    hard.set_size(0);
    builder
        .append_link(&mut hard, "pkg/tool-again", "pkg/bin/tool")
        .unwrap();
    let mut whiteout = tar::Header::new_gnu();
    whiteout.set_mode(0o644);
    whiteout.set_size(0);
    builder
        .append_data(&mut whiteout, "pkg/.wh.removed", std::io::empty())
        .unwrap();
    builder.into_inner().unwrap()
}

fn compress(kind: &str, data: &[u8]) -> Vec<u8> {
    match kind {
        "tar" => data.to_vec(),
        "gz" => {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            enc.write_all(data).unwrap();
            enc.finish().unwrap()
        }
        "bz2" => {
            let mut enc = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
            enc.write_all(data).unwrap();
            enc.finish().unwrap()
        }
        "xz" => {
            let mut enc = xz2::write::XzEncoder::new(Vec::new(), 1);
            enc.write_all(data).unwrap();
            enc.finish().unwrap()
        }
        "zst" => zstd::stream::encode_all(data, 1).unwrap(),
        other => panic!("unknown compression {other}"),
    }
}

fn add(f: &Fixture, patterns: &[&str], dest: &str) -> Result<CopyStats, FsOpsError> {
    let mut req = request(&f.root, dest, vec![dir_source(&f.ctx, patterns)]);
    req.add = true;
    apply_copy(&req)
}

#[test]
fn add_extracts_local_archives_of_every_compression() {
    for kind in ["tar", "gz", "bz2", "xz", "zst"] {
        let f = fixture();
        // The name says nothing: detection is by content.
        fs::write(
            f.ctx.join(format!("release.{kind}.bin")),
            compress(kind, &sample_tar()),
        )
        .unwrap();
        let stats = add(&f, &[&format!("release.{kind}.bin")], "/opt").unwrap();
        assert_eq!(stats.files, 4, "{kind}");
        let tool = f.root.join("opt/pkg/bin/tool");
        assert_eq!(fs::read_to_string(&tool).unwrap(), "tool\n", "{kind}");
        assert_eq!(owner_of(&tool), (1234, 5678), "{kind}");
        assert_eq!(mode_of(&tool), 0o4755, "{kind}");
        assert_eq!(mtime_of(&tool), 1_222_222_222, "{kind}");
        assert_eq!(mode_of(&f.root.join("opt/pkg")), 0o750, "{kind}");
        assert_eq!(mtime_of(&f.root.join("opt/pkg")), 1_111_111_111, "{kind}");
        assert_eq!(
            fs::read_link(f.root.join("opt/pkg/latest")).unwrap(),
            Path::new("bin/tool")
        );
        let again = fs::metadata(f.root.join("opt/pkg/tool-again")).unwrap();
        assert_eq!(again.ino(), fs::metadata(&tool).unwrap().ino(), "{kind}");
        // Whiteouts are not interpreted.
        assert!(f.root.join("opt/pkg/.wh.removed").is_file(), "{kind}");
        assert!(!f.root.join(format!("opt/release.{kind}.bin")).exists());
    }
}

#[test]
fn add_chown_overrides_archive_owners_and_epoch_clamps() {
    let f = fixture();
    fs::write(f.ctx.join("a.tgz"), compress("gz", &sample_tar())).unwrap();
    let mut req = request(&f.root, "/srv/", vec![dir_source(&f.ctx, &["a.tgz"])]);
    req.add = true;
    req.owner = Some((10, 20));
    req.epoch = Some(1_200_000_000);
    apply_copy(&req).unwrap();
    assert_eq!(owner_of(&f.root.join("srv/pkg/bin/tool")), (10, 20));
    assert_eq!(owner_of(&f.root.join("srv/pkg")), (10, 20));
    assert_eq!(mtime_of(&f.root.join("srv/pkg/bin/tool")), 1_200_000_000);
    assert_eq!(mtime_of(&f.root.join("srv/pkg")), 1_111_111_111);
    // `pkg/bin` had no entry of its own: created 0755 with the owner.
    assert_eq!(owner_of(&f.root.join("srv/pkg/bin")), (10, 20));
    assert_eq!(mode_of(&f.root.join("srv/pkg/bin")), 0o755);
}

#[test]
fn non_archives_are_copied_and_copy_never_extracts() {
    let f = fixture();
    write(&f.ctx.join("notes.tar.gz"), "just text, not gzip");
    fs::write(f.ctx.join("empty.tar"), b"").unwrap();
    fs::write(f.ctx.join("real.tar"), sample_tar()).unwrap();

    add(&f, &["notes.tar.gz"], "/a/").unwrap();
    assert_eq!(
        fs::read_to_string(f.root.join("a/notes.tar.gz")).unwrap(),
        "just text, not gzip"
    );
    add(&f, &["empty.tar"], "/a/").unwrap();
    assert!(f.root.join("a/empty.tar").is_file());
    copy(&f, &["real.tar"], "/c/").unwrap();
    assert_eq!(fs::read(f.root.join("c/real.tar")).unwrap(), sample_tar());
    assert!(!f.root.join("c/pkg").exists());
    // ADD of a directory holding an archive copies the archive as a file.
    write(&f.ctx.join("d/keep"), "k");
    fs::write(f.ctx.join("d/inner.tar"), sample_tar()).unwrap();
    add(&f, &["d"], "/d/").unwrap();
    assert!(f.root.join("d/inner.tar").is_file());
}

/// A tar entry whose name is written as is, bypassing the tar crate's checks.
fn raw_entry(
    builder: &mut tar::Builder<Vec<u8>>,
    kind: tar::EntryType,
    name: &str,
    link: &str,
    data: &[u8],
) {
    let mut header = tar::Header::new_old();
    header.set_entry_type(kind);
    header.set_mode(0o644);
    header.set_size(data.len() as u64);
    header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    header.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
    header.set_cksum();
    builder.append(&header, data).unwrap();
}

fn evil_tar(entries: &[(tar::EntryType, &str, &str)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (kind, name, link) in entries {
        let data: &[u8] = if *kind == tar::EntryType::Regular {
            b"pwned"
        } else {
            b""
        };
        raw_entry(&mut builder, *kind, name, link, data);
    }
    builder.into_inner().unwrap()
}

#[test]
fn archive_entries_never_escape_the_destination() {
    use tar::EntryType::{Link, Regular, Symlink};
    let f = fixture();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("dotdot", evil_tar(&[(Regular, "../../outside/secret", "")])),
        (
            "relative-symlink",
            evil_tar(&[(Symlink, "up", "../../../outside")]),
        ),
        ("hardlink", evil_tar(&[(Link, "h", "../outside/secret")])),
    ];
    for (name, data) in cases {
        fs::write(f.ctx.join(name), data).unwrap();
        let err = add(&f, &[name], "/x/").unwrap_err();
        assert!(
            matches!(err, FsOpsError::ArchiveEntry { .. }),
            "{name}: {err}"
        );
        assert!(err.to_string().contains(name), "{name}: {err}");
    }

    // Absolute symlinks are fine in an image, and extraction through them
    // stays in the destination (as in Docker's chroot).
    fs::write(
        f.ctx.join("through"),
        evil_tar(&[
            (Symlink, "escape", "/"),
            (Regular, "escape/etc/passwd", ""),
            (Regular, "/abs/file", ""),
        ]),
    )
    .unwrap();
    add(&f, &["through"], "/unpacked").unwrap();
    assert_eq!(
        fs::read_to_string(f.root.join("unpacked/etc/passwd")).unwrap(),
        "pwned"
    );
    assert!(
        fs::symlink_metadata(f.root.join("unpacked/escape"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert!(!f.root.join("etc").exists());
    assert!(f.root.join("unpacked/abs/file").is_file());
    f.assert_outside_untouched();
}

#[test]
fn archive_entries_replace_what_is_there() {
    use tar::EntryType::{Directory, Regular};
    let f = fixture();
    write(&f.root.join("dst/conflict/inner"), "old dir");
    write(&f.root.join("dst/was-file"), "old file");
    write(&f.root.join("dst/keep-dir/old"), "kept");
    fs::write(
        f.ctx.join("a.tar"),
        evil_tar(&[
            (Regular, "conflict", ""),
            (Directory, "was-file/", ""),
            (Directory, "keep-dir/", ""),
            (Regular, "keep-dir/new", ""),
        ]),
    )
    .unwrap();
    add(&f, &["a.tar"], "/dst/").unwrap();
    assert_eq!(
        fs::read_to_string(f.root.join("dst/conflict")).unwrap(),
        "pwned"
    );
    assert!(f.root.join("dst/was-file").is_dir());
    assert_eq!(
        fs::read_to_string(f.root.join("dst/keep-dir/old")).unwrap(),
        "kept"
    );
    assert!(f.root.join("dst/keep-dir/new").is_file());
}

// ---- extended attributes ----

/// `cap_net_raw+ep` as `setcap` writes it (VFS_CAP_REVISION_2, effective).
const CAP_NET_RAW: [u8; 20] = [
    0x01, 0x00, 0x00, 0x02, 0x00, 0x20, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
];

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

#[test]
fn copy_keeps_extended_attributes_and_capabilities_survive_chown() {
    let f = fixture();
    write(&f.ctx.join("app/bin/ping"), "binary");
    symlink("ping", f.ctx.join("app/bin/link")).unwrap();
    xattr::set(f.ctx.join("app/bin"), "user.dir", b"d").unwrap();
    xattr::set(f.ctx.join("app/bin/ping"), "user.test", b"hello").unwrap();
    if is_root() {
        xattr::set(
            f.ctx.join("app/bin/ping"),
            "security.capability",
            &CAP_NET_RAW,
        )
        .unwrap();
        xattr::set(f.ctx.join("app/bin/link"), "trusted.link", b"l").unwrap();
    }
    let mut req = request(&f.root, "/opt/", vec![dir_source(&f.ctx, &["app"])]);
    if is_root() {
        req.owner = Some((1000, 1000));
    }
    apply_copy(&req).unwrap();
    let ping = f.root.join("opt/bin/ping");
    assert_eq!(
        xattr::get(f.root.join("opt/bin"), "user.dir")
            .unwrap()
            .as_deref(),
        Some(&b"d"[..])
    );
    assert_eq!(
        xattr::get(&ping, "user.test").unwrap().as_deref(),
        Some(&b"hello"[..])
    );
    if is_root() {
        assert_eq!(owner_of(&ping), (1000, 1000));
        assert_eq!(
            xattr::get(&ping, "security.capability").unwrap().as_deref(),
            Some(&CAP_NET_RAW[..]),
            "set after the chown that would drop it"
        );
        assert_eq!(
            xattr::get(f.root.join("opt/bin/link"), "trusted.link")
                .unwrap()
                .as_deref(),
            Some(&b"l"[..])
        );
    }
}

#[test]
fn add_sets_archived_extended_attributes() {
    let f = fixture();
    let mut builder = tar::Builder::new(Vec::new());
    builder
        .append_pax_extensions([
            ("SCHILY.xattr.user.test", &b"hello"[..]),
            ("SCHILY.xattr.trusted.overlay.opaque", &b"y"[..]),
        ])
        .unwrap();
    let mut dir = tar::Header::new_gnu();
    dir.set_entry_type(tar::EntryType::Directory);
    dir.set_mode(0o755);
    dir.set_size(0);
    builder
        .append_data(&mut dir, "d/", std::io::empty())
        .unwrap();
    builder
        .append_pax_extensions([("SCHILY.xattr.user.file", &b"f"[..])])
        .unwrap();
    let mut file = tar::Header::new_gnu();
    file.set_mode(0o644);
    file.set_size(1);
    builder.append_data(&mut file, "d/f", &b"x"[..]).unwrap();
    // `user.*` on a symlink: the kernel refuses, the ADD goes on.
    builder
        .append_pax_extensions([("SCHILY.xattr.user.link", &b"l"[..])])
        .unwrap();
    let mut link = tar::Header::new_gnu();
    link.set_entry_type(tar::EntryType::Symlink);
    link.set_size(0);
    builder.append_link(&mut link, "d/l", "f").unwrap();
    fs::write(f.ctx.join("x.tar"), builder.into_inner().unwrap()).unwrap();
    add(&f, &["x.tar"], "/srv/").unwrap();
    let d = f.root.join("srv/d");
    assert_eq!(
        xattr::get(&d, "user.test").unwrap().as_deref(),
        Some(&b"hello"[..])
    );
    assert_eq!(xattr::get(&d, "trusted.overlay.opaque").unwrap(), None);
    assert_eq!(
        xattr::get(d.join("f"), "user.file").unwrap().as_deref(),
        Some(&b"f"[..])
    );
    assert!(d.join("l").symlink_metadata().is_ok());
}
