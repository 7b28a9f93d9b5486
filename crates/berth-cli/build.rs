//! Records the git commit the binary was built from (`berth -v` prints it) and links `berth`
//! with packed relative relocations.

use std::process::Command;

fn main() {
    // Packed relative relocations: less to read and keep at every start (see berth-daemon/build.rs).
    println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    println!("cargo:rerun-if-changed=../../.git/HEAD");
    println!("cargo:rerun-if-changed=../../.git/refs/heads");
    let sha = Command::new("git")
        .args(["rev-parse", "--short=7", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    if let Some(sha) = sha {
        println!("cargo:rustc-env=BERTH_GIT_SHA={sha}");
    }
}
