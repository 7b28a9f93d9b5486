//! A real distribution image (Debian bookworm minbase built with debootstrap): dynamic binaries,
//! NSS lookups, many files. Runs when BERTH_E2E_DEBIAN=1 or the rootfs tar is already cached.

use berth_e2e::fixtures;
use berth_e2e::{OutputExt, TestDaemon, loud};

use crate::util::{daemon_or_skip, lines};

#[test]
fn debian_rootfs_runs_dynamic_binaries() {
    if !fixtures::debian_enabled() {
        loud(
            "Debian rootfs test SKIPPED: set BERTH_E2E_DEBIAN=1 (builds it with debootstrap once)",
        );
        return;
    }
    let d = daemon_or_skip!(TestDaemon::start());
    d.import_image("debian:bookworm", &fixtures::debian_rootfs_tar());

    let out = d
        .berth(&[
            "run",
            "--rm",
            "debian:bookworm",
            "sh",
            "-c",
            "cat /etc/debian_version; id -un; dpkg-query -W -f '${Status}' bash",
        ])
        .ok("run debian");
    let got = lines(&out);
    assert!(got[0].starts_with("12."), "bookworm is Debian 12: {out}");
    assert_eq!(got[1], "root");
    assert_eq!(got[2], "install ok installed");

    assert_eq!(
        d.berth(&[
            "run",
            "--rm",
            "-u",
            "nobody",
            "debian:bookworm",
            "id",
            "-un"
        ])
        .ok("run as nobody"),
        "nobody"
    );
    assert_eq!(
        d.berth(&["run", "--rm", "-w", "/usr/share", "debian:bookworm", "pwd"])
            .ok("run -w"),
        "/usr/share"
    );
}
