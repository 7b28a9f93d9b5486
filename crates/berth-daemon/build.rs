//! Links berthd with packed relative relocations (DT_RELR, glibc ≥ 2.36): a position-
//! independent binary otherwise carries ~0.5 MB of `.rela.dyn` that the loader reads at
//! every start, all of it resident while the daemon idles.

fn main() {
    println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
}
