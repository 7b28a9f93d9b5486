//! Hostile and broken archives: path traversal, links that point outside, truncation.
//! The daemon may refuse them or sanitise them, but it must never write outside its data root,
//! never leave a half-made image behind, and must keep serving.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use berth_e2e::fixtures::{self, RawTar, climbing_path};
use berth_e2e::{OutputExt, TestDaemon};

use crate::util::{daemon_or_skip, daemon_with_busybox, lines};

const VICTIM_TEXT: &str = "original\n";

/// A layer that tries every classic escape towards `outside`.
fn hostile_layer(outside: &Path) -> Vec<u8> {
    let abs = |name: &str| outside.join(name).to_string_lossy().into_owned();
    let mut tar = RawTar::new();
    tar.dir("bin/", 0o755)
        .file("bin/harmless", 0o755, b"#!/bin/sh\n")
        // ../../…/<outside>/dotdot-canary
        .file(
            &climbing_path(&outside.join("dotdot-canary")),
            0o644,
            b"escaped\n",
        )
        // /<outside>/absolute-canary, an absolute member name
        .file(&abs("absolute-canary"), 0o644, b"escaped\n")
        // an absolute symlink to the outside directory, then a file written through it
        .symlink("escape-abs", &outside.to_string_lossy())
        .file("escape-abs/symlink-canary", 0o644, b"escaped\n")
        // a relative symlink climbing out, then a file written through it
        .symlink("escape-rel", &climbing_path(outside))
        .file("escape-rel/relsymlink-canary", 0o644, b"escaped\n")
        // a symlinked directory component deeper in the path
        .symlink("bin/sub", &outside.to_string_lossy())
        .file("bin/sub/nested-canary", 0o644, b"escaped\n")
        // hard links to a host file, by climbing and by absolute name, then overwritten
        .hardlink("hl-rel", &climbing_path(&outside.join("victim")))
        .hardlink("hl-abs", &abs("victim"))
        .file("hl-rel", 0o644, b"overwritten\n")
        .file("hl-abs", 0o644, b"overwritten\n");
    tar.finish()
}

/// Panics if anything appeared in `outside` or the victim file was touched.
fn assert_outside_untouched(outside: &Path, step: &str) {
    let mut names: Vec<String> = fs::read_dir(outside)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["victim"],
        "{step}: files appeared outside the data root"
    );
    let victim = outside.join("victim");
    assert_eq!(
        fs::read_to_string(&victim).unwrap(),
        VICTIM_TEXT,
        "{step}: the host file was modified"
    );
    assert_eq!(
        fs::metadata(&victim).unwrap().nlink(),
        1,
        "{step}: the host file was hard-linked into the store"
    );
}

#[test]
fn hostile_archives_never_write_outside_the_data_root() {
    let d = daemon_or_skip!(daemon_with_busybox());
    let outside = d.scratch().join("outside");
    fs::create_dir_all(&outside).unwrap();
    fs::write(outside.join("victim"), VICTIM_TEXT).unwrap();

    let layer = hostile_layer(&outside);
    let layer_path = d.scratch().join("hostile-layer.tar");
    fs::write(&layer_path, &layer).unwrap();
    let archive = fixtures::docker_archive("hostile:latest", &layer, |outer| {
        outer.file(
            &climbing_path(&outside.join("outer-canary")),
            0o644,
            b"escaped\n",
        );
        outer.file(
            &outside.join("outer-absolute-canary").to_string_lossy(),
            0o644,
            b"escaped\n",
        );
    });
    let archive_path = d.scratch().join("hostile-save.tar");
    fs::write(&archive_path, &archive).unwrap();

    let load = d.berth(&["load", "-i", archive_path.to_str().unwrap()]);
    assert_outside_untouched(&outside, "load");
    let import = d.berth(&["import", layer_path.to_str().unwrap(), "hostile:imported"]);
    assert_outside_untouched(&outside, "import");

    // If an image was accepted (sanitised), making a container from it must not escape either.
    for (accepted, image) in [
        (load.status.success(), "hostile:latest"),
        (import.status.success(), "hostile:imported"),
    ] {
        if accepted && d.inspect_image(image).is_some() {
            let name = format!("from-{}", image.replace(':', "-"));
            d.berth(&["create", "--name", &name, image, "/bin/harmless"])
                .ok("create from a sanitised image");
            let _ = d.berth(&["start", &name]);
            let _ = d.berth(&[
                "export",
                "-o",
                d.scratch().join("export.tar").to_str().unwrap(),
                &name,
            ]);
            assert_outside_untouched(&outside, &format!("container from {image}"));
        }
    }

    // The daemon still serves.
    assert_eq!(d.api_get("/_ping").0, 200);
    assert_eq!(
        d.berth(&["run", "--rm", "busybox", "echo", "alive"])
            .ok("run after hostile input"),
        "alive"
    );
}

#[test]
fn image_symlinks_do_not_redirect_container_setup() {
    // /etc, /dev/shm-like targets and the workdir are where the engine writes and mounts while it
    // sets a container up; an image that makes them symlinks to host paths must not redirect that.
    let d = daemon_or_skip!(daemon_with_busybox());
    let outside = d.scratch().join("outside");
    fs::create_dir_all(&outside).unwrap();
    fs::write(outside.join("victim"), VICTIM_TEXT).unwrap();
    let target = outside.to_string_lossy().into_owned();
    let mut layer = RawTar::new();
    layer
        .symlink("etc", &target)
        .symlink("work", &target)
        .symlink("scratch", &target)
        .dir("bin/", 0o755)
        .file("bin/noop", 0o755, b"not an executable\n");
    let archive = fixtures::docker_archive("symlinked:latest", &layer.finish(), |_| {});
    let path = d.scratch().join("symlinked.tar");
    fs::write(&path, archive).unwrap();
    d.berth(&["load", "-i", path.to_str().unwrap()])
        .ok("load an image with symlinked /etc");

    // Start fails (bin/noop is not a program); what matters is what happened before exec.
    let _ = d.berth(&[
        "run",
        "--name",
        "sym",
        "-h",
        "symhost",
        "-w",
        "/work/sub",
        "--tmpfs",
        "/scratch",
        "symlinked",
        "/bin/noop",
    ]);
    assert_outside_untouched(
        &outside,
        "running a container whose /etc, workdir and tmpfs target are host symlinks",
    );
    let _ = d.berth(&["rm", "-f", "sym"]);
    assert_outside_untouched(&outside, "removing that container");
}

#[test]
fn truncated_archives_fail_and_leave_no_image() {
    let d = daemon_or_skip!(daemon_with_busybox());
    let images_before = d
        .berth(&[
            "images",
            "-a",
            "--no-trunc",
            "--format",
            "{{.Repository}}:{{.Tag}} {{.ID}}",
        ])
        .ok("images");

    let rootfs = fs::read(fixtures::busybox_rootfs_tar()).unwrap();
    // Cut inside the busybox binary's data, at an offset that is not a block boundary.
    let cut = |data: &[u8]| {
        let mut n = data.len() * 3 / 5;
        if n.is_multiple_of(512) {
            n += 7;
        }
        data[..n].to_vec()
    };

    let archive = fixtures::docker_archive("truncated:1", &rootfs, |_| {});
    let path = d.scratch().join("truncated-save.tar");
    fs::write(&path, cut(&archive)).unwrap();
    let out = d.berth(&["load", "-i", path.to_str().unwrap()]);
    out.expect_failure("load of a truncated archive");
    assert!(
        !out.stderr_text().trim().is_empty(),
        "a failed load explains itself"
    );

    let path = d.scratch().join("truncated-rootfs.tar");
    fs::write(&path, cut(&rootfs)).unwrap();
    d.berth(&["import", path.to_str().unwrap(), "truncated:2"])
        .expect_failure("import of a truncated tar");

    // Not a tar at all.
    let path = d.scratch().join("garbage.tar");
    fs::write(
        &path,
        b"this is not a tar archive, just text that goes on and on\n".repeat(40),
    )
    .unwrap();
    d.berth(&["load", "-i", path.to_str().unwrap()])
        .expect_failure("load of garbage");

    let images_after = d
        .berth(&[
            "images",
            "-a",
            "--no-trunc",
            "--format",
            "{{.Repository}}:{{.Tag}} {{.ID}}",
        ])
        .ok("images");
    assert_eq!(
        lines(&images_after),
        lines(&images_before),
        "failed loads and imports leave no image behind"
    );
    assert_eq!(
        d.berth(&["run", "--rm", "busybox", "echo", "alive"])
            .ok("run after broken input"),
        "alive"
    );
}

#[test]
fn archive_without_manifest_is_rejected() {
    let d = daemon_or_skip!(TestDaemon::start());
    let mut tar = RawTar::new();
    tar.file("README", 0o644, b"no manifest here\n");
    let path = d.scratch().join("no-manifest.tar");
    fs::write(&path, tar.finish()).unwrap();
    d.berth(&["load", "-i", path.to_str().unwrap()])
        .expect_failure("load without manifest.json or index.json");
    assert_eq!(d.berth(&["images", "-aq"]).ok("images"), "");
}
