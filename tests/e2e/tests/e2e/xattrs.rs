//! Extended attributes through `cp`, `commit`, `build` and the registry: file capabilities
//! (`security.capability`) and `user.*` attributes travel in tars as `SCHILY.xattr.` PAX
//! records, as moby's archives carry them, and images keep them.

use std::fs;
use std::path::Path;

use berth_e2e::{OutputExt, TestDaemon};

use crate::registry::berth_registry;
use crate::util::{daemon_or_skip, daemon_with_busybox};

/// `cap_net_raw+ep` as `setcap` writes it (VFS_CAP_REVISION_2, effective).
const CAP_NET_RAW: [u8; 20] = [
    0x01, 0x00, 0x00, 0x02, 0x00, 0x20, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
];

fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 test path")
}

fn get(path: &Path, name: &str) -> Option<Vec<u8>> {
    xattr::get(path, name).unwrap_or_else(|e| panic!("read {name} of {}: {e}", path.display()))
}

/// A host directory `src` holding `ping` (a capability and `user.test=hello`) and `conf/`
/// (`user.dir=d`), under `dir`.
fn marked_tree(dir: &Path) -> std::path::PathBuf {
    let src = dir.join("src");
    fs::create_dir_all(src.join("conf")).expect("create the source tree");
    fs::write(src.join("ping"), "#!/bin/sh\necho pong\n").expect("write ping");
    fs::write(src.join("conf/app.conf"), "x=1\n").expect("write app.conf");
    xattr::set(src.join("ping"), "user.test", b"hello").expect("set user.test");
    xattr::set(src.join("ping"), "security.capability", &CAP_NET_RAW).expect("set the capability");
    xattr::set(src.join("conf"), "user.dir", b"d").expect("set user.dir");
    src
}

/// Checks what [`marked_tree`] set, on a copy of it at `copy`.
fn assert_marked(copy: &Path, what: &str) {
    assert_eq!(
        get(&copy.join("ping"), "user.test").as_deref(),
        Some(&b"hello"[..]),
        "{what}: user.test of ping"
    );
    assert_eq!(
        get(&copy.join("ping"), "security.capability").as_deref(),
        Some(&CAP_NET_RAW[..]),
        "{what}: the capability of ping"
    );
    assert_eq!(
        get(&copy.join("conf"), "user.dir").as_deref(),
        Some(&b"d"[..]),
        "{what}: user.dir of conf"
    );
}

/// Copies `container:/src` out to a fresh host directory named `name` and returns it.
fn copy_out(d: &TestDaemon, container: &str, name: &str) -> std::path::PathBuf {
    let out = d.scratch().join(name);
    fs::create_dir_all(&out).expect("create the copy-out directory");
    d.berth(&["cp", &format!("{container}:/src"), path_str(&out)])
        .ok(&format!("cp {container}:/src out"));
    out.join("src")
}

/// `cp` into a running container keeps the attributes, `cp` out brings them back; `commit`
/// stores them in the layer, a container of the new image has them (read from its
/// freshly mounted layers), and so does the image pushed and pulled into another daemon.
#[test]
fn xattrs_survive_cp_commit_and_push_pull() {
    let d = daemon_or_skip!(daemon_with_busybox());
    let src = marked_tree(&d.scratch());
    d.berth(&["run", "-d", "--name", "xsrc", "busybox", "sleep", "1000"])
        .ok("run -d");
    d.berth(&["cp", path_str(&src), "xsrc:/src"])
        .ok("cp into the container");
    // The container sees the file (the capability does not stop it from running).
    assert_eq!(
        d.berth(&["exec", "xsrc", "sh", "/src/ping"])
            .ok("exec the copied file")
            .trim(),
        "pong"
    );
    assert_marked(
        &copy_out(&d, "xsrc", "out-running"),
        "cp out of a running container",
    );

    d.berth(&["commit", "xsrc", "xattr-img:1"]).ok("commit");
    d.berth(&["create", "--name", "xdst", "xattr-img:1", "true"])
        .ok("create from the committed image");
    assert_marked(
        &copy_out(&d, "xdst", "out-committed"),
        "the committed image",
    );

    let registry = berth_registry(&[]);
    let remote = format!("{}/e2e/xattr:1", registry.addr);
    d.berth(&["tag", "xattr-img:1", &remote]).ok("tag");
    d.berth(&["push", &remote]).ok("push");
    let b = daemon_or_skip!(TestDaemon::start());
    b.berth(&["pull", &remote]).ok("pull into another daemon");
    b.berth(&["create", "--name", "xpulled", &remote, "true"])
        .ok("create from the pulled image");
    assert_marked(&copy_out(&b, "xpulled", "out-pulled"), "the pulled image");

    // `save` and `load` into a third daemon unpack the layer again.
    let saved = d.scratch().join("xattr-img.tar");
    d.berth(&["save", "-o", path_str(&saved), "xattr-img:1"])
        .ok("save");
    let c = daemon_or_skip!(TestDaemon::start());
    c.berth(&["load", "-i", path_str(&saved)]).ok("load");
    c.berth(&["create", "--name", "xloaded", "xattr-img:1", "true"])
        .ok("create from the loaded image");
    assert_marked(&copy_out(&c, "xloaded", "out-loaded"), "the loaded image");
}

/// `COPY` from a build context keeps the attributes of the context's files in the image.
#[test]
fn xattrs_survive_build_copy() {
    let d = daemon_or_skip!(daemon_with_busybox());
    let ctx = d.scratch().join("ctx");
    fs::create_dir_all(&ctx).expect("context dir");
    marked_tree(&ctx);
    fs::write(ctx.join("Dockerfile"), "FROM busybox\nCOPY src /src\n").expect("Dockerfile");
    d.berth(&["build", "-q", "-t", "xattr-built:1", path_str(&ctx)])
        .ok("build");
    d.berth(&["create", "--name", "xbuilt", "xattr-built:1", "true"])
        .ok("create from the built image");
    assert_marked(&copy_out(&d, "xbuilt", "out-built"), "the built image");
}

/// The real docker CLI reads berthd's archives (applying the PAX records itself) and its
/// own archives' capability records are applied by berthd.
#[test]
fn xattrs_with_the_docker_cli() {
    let d = daemon_or_skip!(daemon_with_busybox());
    if !berth_e2e::docker_available() {
        berth_e2e::loud("docker CLI not installed: docker cp xattr interop SKIPPED");
        return;
    }
    let src = marked_tree(&d.scratch());
    d.berth(&["run", "-d", "--name", "xdock", "busybox", "sleep", "1000"])
        .ok("run -d");
    d.berth(&["cp", path_str(&src), "xdock:/src"])
        .ok("berth cp in");
    let out = d.scratch().join("docker-out");
    fs::create_dir_all(&out).expect("create the copy-out directory");
    d.docker(&["cp", "xdock:/src", path_str(&out)])
        .expect("docker")
        .ok("docker cp out");
    assert_marked(&out.join("src"), "docker cp out of berthd");

    // moby's archive writer carries file capabilities (and only them).
    d.docker(&["cp", path_str(&src.join("ping")), "xdock:/ping2"])
        .expect("docker")
        .ok("docker cp in");
    let back = d.scratch().join("back");
    fs::create_dir_all(&back).expect("create the copy-out directory");
    d.berth(&["cp", "xdock:/ping2", path_str(&back)])
        .ok("berth cp out");
    assert_eq!(
        get(&back.join("ping2"), "security.capability").as_deref(),
        Some(&CAP_NET_RAW[..]),
        "the capability docker sent"
    );

    // docker build sends its context as a tar, with the same capability records, which
    // COPY keeps in the image.
    let ctx = d.scratch().join("docker-ctx");
    fs::create_dir_all(&ctx).expect("context dir");
    marked_tree(&ctx);
    fs::write(ctx.join("Dockerfile"), "FROM busybox\nCOPY src /src\n").expect("Dockerfile");
    d.docker_with(
        &["build", "-q", "-t", "xattr-docker-built:1", path_str(&ctx)],
        None,
        std::time::Duration::from_secs(120),
    )
    .expect("docker")
    .ok("docker build");
    d.berth(&[
        "create",
        "--name",
        "xdbuilt",
        "xattr-docker-built:1",
        "true",
    ])
    .ok("create from the image docker built");
    let built = copy_out(&d, "xdbuilt", "out-docker-built");
    assert_eq!(
        get(&built.join("ping"), "security.capability").as_deref(),
        Some(&CAP_NET_RAW[..]),
        "the capability of a context sent by docker build"
    );
}
