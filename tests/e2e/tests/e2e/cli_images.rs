//! Images through the berth CLI: list, inspect, history, tag/rmi, prune, save/load, import, export.

use std::process::Command;
use std::time::Duration;

use berth_e2e::fixtures::{self, RawTar};
use berth_e2e::process::run_with_timeout;
use berth_e2e::{OutputExt, TestDaemon};

use crate::util::{daemon_or_skip, daemon_with_busybox, inspect_field, is_id, lines};

/// The 12-digit short form of an image id.
fn short(id: &str) -> String {
    id.trim_start_matches("sha256:")[..12].to_string()
}

/// Lists a tar archive given as bytes, with GNU tar.
fn tar_listing(bytes: &[u8]) -> Vec<String> {
    let mut cmd = Command::new("tar");
    cmd.arg("-tf").arg("-");
    let out = run_with_timeout(cmd, Some(bytes), Duration::from_secs(60)).ok("tar -t");
    out.lines()
        .map(|l| l.trim_start_matches("./").to_string())
        .collect()
}

/// A one-file rootfs, different from busybox, for images that must get their own id.
fn tiny_rootfs(content: &str) -> Vec<u8> {
    let mut tar = RawTar::new();
    tar.dir("data/", 0o755)
        .file("data/hello.txt", 0o644, content.as_bytes());
    tar.finish()
}

#[test]
fn images_inspect_and_history() {
    let d = daemon_or_skip!(daemon_with_busybox());
    let id = d.busybox_image();
    assert!(
        is_id(&id) && id.starts_with("sha256:"),
        "image ids are sha256:<hex>, got {id}"
    );

    let out = d.berth(&["images"]).ok("images");
    let mut rows = out.lines();
    let header = rows.next().unwrap_or_default();
    assert!(
        header.contains("REPOSITORY") && header.contains("TAG") && header.contains("IMAGE ID"),
        "{out}"
    );
    let row = rows
        .find(|l| l.starts_with("busybox"))
        .unwrap_or_else(|| panic!("busybox missing:\n{out}"));
    assert!(row.contains("latest") && row.contains(&short(&id)), "{row}");

    assert_eq!(d.berth(&["images", "-q"]).ok("images -q"), short(&id));
    assert_eq!(
        d.berth(&["images", "--format", "{{.Repository}}:{{.Tag}}"])
            .ok("images --format"),
        "busybox:latest"
    );
    assert_eq!(
        d.berth(&["images", "--no-trunc", "--format", "{{.ID}}"])
            .ok("images --no-trunc"),
        id
    );

    let out = d.berth(&["inspect", "busybox"]).ok("inspect busybox");
    let doc: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("inspect prints JSON ({e}): {out}"));
    let img = &doc[0];
    assert_eq!(img["Id"].as_str(), Some(id.as_str()));
    assert!(
        img["RepoTags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t == "busybox:latest"),
        "{}",
        img["RepoTags"]
    );
    assert_eq!(img["Os"], "linux");
    assert_eq!(img["Architecture"], fixtures::oci_arch());
    assert_eq!(img["RootFS"]["Type"], "layers");
    assert_eq!(
        img["RootFS"]["Layers"].as_array().map(Vec::len),
        Some(1),
        "an import is one layer"
    );
    let busybox_size = std::fs::metadata("/usr/bin/busybox").unwrap().len() as i64;
    assert!(
        img["Size"].as_i64().unwrap_or(0) >= busybox_size,
        "Size counts the layer: {}",
        img["Size"]
    );
    assert_eq!(
        d.berth(&["image", "inspect", "-f", "{{.Id}}", "busybox:latest"])
            .ok("image inspect -f"),
        id
    );

    let out = d.berth(&["history", "busybox"]).ok("history");
    let header = out.lines().next().unwrap_or_default();
    for column in ["IMAGE", "CREATED", "CREATED BY", "SIZE"] {
        assert!(
            header.contains(column),
            "history header lacks {column}: {out}"
        );
    }
    assert!(
        out.lines().count() >= 2,
        "history has a row per layer: {out}"
    );
    assert_eq!(
        lines(&d.berth(&["history", "-q", "busybox"]).ok("history -q"))[0],
        short(&id)
    );

    d.berth(&["inspect", "nosuch-image:1"])
        .expect_failure("inspect of an unknown image");
}

#[test]
fn tag_and_rmi_untag_versus_delete() {
    let d = daemon_or_skip!(daemon_with_busybox());
    let id = d.busybox_image();

    d.berth(&["tag", "busybox", "mybb:v1"]).ok("tag");
    let out = d
        .berth(&["images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}"])
        .ok("images after tag");
    let mut rows = lines(&out);
    rows.sort();
    assert_eq!(
        rows,
        [
            format!("busybox:latest {}", short(&id)),
            format!("mybb:v1 {}", short(&id))
        ]
    );

    let out = d.berth(&["rmi", "mybb:v1"]).ok("rmi of one of two tags");
    assert!(out.contains("Untagged: mybb:v1"), "{out}");
    assert!(
        !out.contains("Deleted"),
        "the image keeps another tag, so only the tag goes: {out}"
    );
    assert_eq!(inspect_field(&d, "busybox", "{{.Id}}"), id);

    // A container (even a stopped one) holds its image.
    d.berth(&["run", "--name", "user", "busybox", "true"])
        .ok("run user");
    let out = d.berth(&["rmi", "busybox"]);
    out.expect_failure("rmi of an image in use");
    assert!(
        out.stderr_text().to_lowercase().contains("conflict"),
        "{}",
        out.stderr_text()
    );
    assert!(
        out.stderr_text().contains("container"),
        "{}",
        out.stderr_text()
    );
    assert_eq!(
        inspect_field(&d, "busybox", "{{.Id}}"),
        id,
        "the refused rmi kept the image"
    );
    d.berth(&["rm", "user"]).ok("rm user");

    d.berth(&["tag", "busybox", "other:1"]).ok("tag other:1");
    let out = d
        .berth(&["rmi", "busybox"])
        .ok("rmi busybox with another tag left");
    assert!(out.contains("Untagged: busybox:latest"), "{out}");
    assert!(!out.contains("Deleted"), "{out}");
    assert_eq!(inspect_field(&d, "other:1", "{{.Id}}"), id);

    let out = d.berth(&["rmi", "other:1"]).ok("rmi of the last tag");
    assert!(out.contains("Untagged: other:1"), "{out}");
    assert!(
        out.contains(&format!("Deleted: {id}")),
        "the last tag deletes the image: {out}"
    );
    assert_eq!(d.berth(&["images", "-q"]).ok("images -q"), "");

    let out = d.berth(&["rmi", "nosuch:1"]);
    out.expect_failure("rmi of an unknown image");
    assert!(
        out.stderr_text().contains("No such image"),
        "{}",
        out.stderr_text()
    );
}

#[test]
fn rmi_force_untags_image_used_by_stopped_container() {
    let d = daemon_or_skip!(daemon_with_busybox());
    d.berth(&["run", "--name", "user", "busybox", "true"])
        .ok("run user");
    let out = d.berth(&["rmi", "-f", "busybox"]).ok("rmi -f");
    assert!(out.contains("Untagged: busybox:latest"), "{out}");
    d.berth(&["inspect", "--type", "image", "busybox"])
        .expect_failure("the tag is gone after rmi -f");
}

#[test]
fn dangling_images_and_prune() {
    let d = daemon_or_skip!(daemon_with_busybox());
    let busybox = d.busybox_image();
    let tar = d.scratch().join("tiny.tar");
    std::fs::write(&tar, tiny_rootfs("dangling\n")).unwrap();
    let dangling = d
        .berth(&["import", tar.to_str().unwrap()])
        .ok("import without a name");
    assert!(
        is_id(&dangling),
        "import prints the new image id, got {dangling:?}"
    );

    assert_eq!(
        d.berth(&["images", "--filter", "dangling=true", "-q"])
            .ok("images dangling"),
        short(&dangling)
    );
    assert_eq!(
        d.berth(&["images", "--filter", "dangling=false", "-q"])
            .ok("images not dangling"),
        short(&busybox)
    );
    assert!(
        d.berth(&["images"]).ok("images").contains("<none>"),
        "an untagged image shows as <none>"
    );

    let out = d.berth(&["image", "prune", "-f"]).ok("image prune -f");
    assert!(
        out.contains(&dangling),
        "prune lists the deleted image: {out}"
    );
    assert_eq!(
        d.berth(&["images", "-q"]).ok("images -q"),
        short(&busybox),
        "prune without -a keeps tagged images"
    );

    d.berth(&["run", "--name", "holder", "busybox", "true"])
        .ok("run holder");
    d.berth(&["image", "prune", "-a", "-f"])
        .ok("image prune -a with the image in use");
    assert_eq!(
        d.berth(&["images", "-q"]).ok("images -q"),
        short(&busybox),
        "prune -a keeps images used by containers"
    );
    d.berth(&["rm", "holder"]).ok("rm holder");
    d.berth(&["image", "prune", "-a", "-f"])
        .ok("image prune -a");
    assert_eq!(
        d.berth(&["images", "-q"]).ok("images -q"),
        "",
        "prune -a removes unused images"
    );
}

#[test]
fn save_load_round_trip_between_daemons() {
    let d1 = daemon_or_skip!(daemon_with_busybox());
    let id = d1.busybox_image();
    let archive = d1.scratch().join("busybox.tar");
    d1.berth(&["save", "-o", archive.to_str().unwrap(), "busybox"])
        .ok("save -o");
    let bytes = std::fs::read(&archive).unwrap();
    let listing = tar_listing(&bytes);
    assert!(
        listing.iter().any(|e| e == "manifest.json"),
        "docker save archives carry manifest.json: {listing:?}"
    );

    // save without -o writes the archive to stdout.
    let out = d1.berth(&["save", "busybox"]);
    out.expect_code(0, "save to stdout");
    assert!(
        tar_listing(&out.stdout)
            .iter()
            .any(|e| e == "manifest.json")
    );

    let d2 = daemon_or_skip!(TestDaemon::start());
    let out = d2
        .berth(&["load", "-i", archive.to_str().unwrap()])
        .ok("load -i");
    assert!(out.contains("Loaded image: busybox:latest"), "{out}");
    assert_eq!(
        inspect_field(&d2, "busybox", "{{.Id}}"),
        id,
        "the loaded image has the same id"
    );
    assert_eq!(
        d2.berth(&["run", "--rm", "busybox", "echo", "loaded"])
            .ok("run the loaded image"),
        "loaded"
    );

    // load from stdin.
    d2.berth(&["rmi", "busybox"]).ok("rmi before loading again");
    let out = d2
        .berth_with(&["load"], Some(&bytes), Duration::from_secs(120))
        .ok("load from stdin");
    assert!(out.contains("Loaded image: busybox:latest"), "{out}");
    assert_eq!(inspect_field(&d2, "busybox", "{{.Id}}"), id);
}

#[test]
fn import_with_changes_and_from_stdin() {
    let d = daemon_or_skip!(TestDaemon::start());
    let rootfs = fixtures::busybox_rootfs_tar();
    let rootfs_path = rootfs.to_str().unwrap();

    let id = d
        .berth(&[
            "import",
            "--change",
            r#"CMD ["echo","imported"]"#,
            rootfs_path,
            "imp:1",
        ])
        .ok("import --change");
    assert!(is_id(&id), "import prints the image id, got {id:?}");
    assert_eq!(
        d.berth(&["run", "--rm", "imp:1"])
            .ok("run the imported CMD"),
        "imported"
    );
    assert_eq!(
        inspect_field(&d, "imp:1", "{{json .Config.Cmd}}"),
        r#"["echo","imported"]"#
    );

    let out = d
        .berth(&[
            "import",
            "-c",
            "ENV FOO=bar",
            "-c",
            "WORKDIR /tmp",
            "-m",
            "e2e import",
            rootfs_path,
            "imp:2",
        ])
        .ok("import with ENV and WORKDIR");
    assert!(is_id(&out), "{out}");
    let got = d
        .berth(&["run", "--rm", "imp:2", "sh", "-c", "echo $FOO; pwd"])
        .ok("run imp:2");
    assert_eq!(lines(&got), ["bar", "/tmp"]);
    assert_eq!(inspect_field(&d, "imp:2", "{{.Comment}}"), "e2e import");

    let data = std::fs::read(&rootfs).unwrap();
    d.berth_with(
        &["import", "-", "imp:3"],
        Some(&data),
        Duration::from_secs(120),
    )
    .ok("import from stdin");
    assert_eq!(
        d.berth(&["run", "--rm", "imp:3", "echo", "from stdin"])
            .ok("run imp:3"),
        "from stdin"
    );
}

#[test]
fn export_container_filesystem() {
    let d = daemon_or_skip!(daemon_with_busybox());
    let id = d
        .berth(&["create", "--name", "ex", "busybox", "true"])
        .ok("create");
    assert!(is_id(&id), "create prints the container id, got {id:?}");
    let out = d.berth(&["export", "ex"]);
    out.expect_code(0, "export to stdout");
    let listing = tar_listing(&out.stdout);
    for wanted in ["bin/busybox", "etc/passwd"] {
        assert!(
            listing.iter().any(|e| e == wanted),
            "export lacks {wanted}: {listing:?}"
        );
    }

    d.berth(&[
        "run",
        "--name",
        "writer",
        "busybox",
        "sh",
        "-c",
        "echo data > /tmp/made-in-container",
    ])
    .ok("run writer");
    let file = d.scratch().join("writer.tar");
    d.berth(&["export", "-o", file.to_str().unwrap(), "writer"])
        .ok("export -o");
    let listing = tar_listing(&std::fs::read(&file).unwrap());
    assert!(
        listing.iter().any(|e| e == "tmp/made-in-container"),
        "export includes the container's changes: {listing:?}"
    );
}

/// Serves `body` once over plain HTTP on a loopback port; returns the URL.
fn serve_once(body: Vec<u8>) -> (String, std::thread::JoinHandle<()>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let url = format!(
        "http://{}/rootfs.tar",
        listener.local_addr().expect("local addr")
    );
    let server = std::thread::spawn(move || {
        if let Ok((mut conn, _)) = listener.accept() {
            let mut request = [0u8; 4096];
            let _ = conn.read(&mut request);
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = conn.write_all(head.as_bytes());
            let _ = conn.write_all(&body);
        }
    });
    (url, server)
}

#[test]
fn import_from_a_url() {
    let d = daemon_or_skip!(TestDaemon::start());
    let (url, server) = serve_once(tiny_rootfs("from a url\n"));
    let id = d
        .berth(&[
            "import",
            "-c",
            r#"CMD ["cat","/data/hello.txt"]"#,
            &url,
            "fromurl:1",
        ])
        .ok("import URL");
    assert!(is_id(id.trim()), "import prints the new id, got {id}");
    server.join().expect("server thread");
    d.berth(&["create", "--name", "fromurl", "fromurl:1"])
        .ok("create");
    let mut export = Command::new(d.bin_dir().join("berth"));
    export.args(["-H", &d.host(), "--no-autostart", "export", "fromurl"]);
    let tar = run_with_timeout(export, None, Duration::from_secs(60));
    let listing = tar_listing(&tar.stdout);
    assert!(listing.iter().any(|l| l == "data/hello.txt"), "{listing:?}");
    let missing = d.berth(&["import", "http://127.0.0.1:9/none.tar", "never:1"]);
    assert_eq!(missing.status.code(), Some(1), "{missing:?}");
    assert!(
        d.berth(&["images", "-q", "never"]).ok("images").is_empty(),
        "a failed import leaves no image"
    );
}
