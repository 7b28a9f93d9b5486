//! Builds `berth-init`, the static init binary for `--init` containers.
//!
//! It must run inside any container root filesystem, so it is linked statically
//! (`+crt-static`) — a flag cargo cannot set for one binary of a package, hence a direct
//! rustc invocation. The result is embedded into the library (see `spec::install_init_binary`).

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    // Packed relative relocations: less to read and keep at every start (see berth-daemon/build.rs).
    println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    let src = "src/init/berth-init.rs";
    println!("cargo:rerun-if-changed={src}");
    let out =
        PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR is set by cargo")).join("berth-init");
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let target = env::var("TARGET").expect("TARGET is set by cargo");
    let status = Command::new(rustc)
        .args([
            "--edition",
            "2024",
            "--crate-type",
            "bin",
            "--crate-name",
            "berth_init",
        ])
        .args(["--target", &target])
        .args([
            "-C",
            "opt-level=s",
            "-C",
            "panic=abort",
            "-C",
            "strip=symbols",
            "-C",
            "debuginfo=0",
        ])
        .args(["-C", "target-feature=+crt-static"])
        .arg("-o")
        .arg(&out)
        .arg(src)
        .status()
        .expect("run rustc for berth-init");
    assert!(status.success(), "building berth-init failed");
}
