//! Translation of Docker's seccomp profile format into the OCI `LinuxSeccomp`.

use oci_spec::runtime::LinuxSeccomp;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::{Result, RuntimeError};

/// Docker's default seccomp profile (vendored byte for byte).
pub const DEFAULT_PROFILE: &str = include_str!("../data/seccomp-default.json");

/// The host architecture as Docker's profile names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostArch {
    /// Go's name (`amd64`, `arm64`, ...) used in `includes.arches`.
    pub go_arch: &'static str,
    /// libseccomp's name (`SCMP_ARCH_X86_64`) used in `archMap`.
    pub scmp_arch: &'static str,
    /// Kernel version (major, minor) for `includes.minKernel`.
    pub kernel: (u32, u32),
}

impl HostArch {
    /// The architecture this binary was built for.
    pub fn detect(kernel: (u32, u32)) -> Self {
        let (go_arch, scmp_arch) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", "SCMP_ARCH_X86_64"),
            "x86" => ("386", "SCMP_ARCH_X86"),
            "aarch64" => ("arm64", "SCMP_ARCH_AARCH64"),
            "arm" => ("arm", "SCMP_ARCH_ARM"),
            "riscv64" => ("riscv64", "SCMP_ARCH_RISCV64"),
            "s390x" => ("s390x", "SCMP_ARCH_S390X"),
            "powerpc64" => ("ppc64le", "SCMP_ARCH_PPC64LE"),
            "loongarch64" => ("loong64", "SCMP_ARCH_LOONGARCH64"),
            _ => ("unknown", "SCMP_ARCH_NATIVE"),
        };
        HostArch {
            go_arch,
            scmp_arch,
            kernel,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DockerProfile {
    default_action: String,
    #[serde(default)]
    default_errno_ret: Option<u32>,
    #[serde(default)]
    arch_map: Option<Vec<ArchMap>>,
    #[serde(default)]
    architectures: Option<Vec<String>>,
    #[serde(default)]
    syscalls: Option<Vec<DockerSyscall>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ArchMap {
    architecture: String,
    #[serde(default)]
    sub_architectures: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DockerSyscall {
    #[serde(default)]
    names: Vec<String>,
    #[serde(default)]
    name: Option<String>,
    action: String,
    #[serde(default)]
    errno_ret: Option<u32>,
    #[serde(default)]
    args: Option<Vec<Value>>,
    #[serde(default)]
    includes: Option<Filter>,
    #[serde(default)]
    excludes: Option<Filter>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Filter {
    #[serde(default)]
    caps: Option<Vec<String>>,
    #[serde(default)]
    arches: Option<Vec<String>>,
    #[serde(default)]
    min_kernel: Option<String>,
}

fn parse_kernel(v: &str) -> Option<(u32, u32)> {
    let mut it = v.split('.');
    Some((
        it.next()?.trim().parse().ok()?,
        it.next().unwrap_or("0").trim().parse().ok()?,
    ))
}

/// A translation and what it was made from.
struct Translation {
    profile: String,
    caps: Vec<String>,
    arch: HostArch,
    seccomp: LinuxSeccomp,
}

/// Translations kept: a daemon sees a few profiles and capability sets.
const TRANSLATIONS_KEPT: usize = 16;

static TRANSLATIONS: std::sync::Mutex<Vec<Translation>> = std::sync::Mutex::new(Vec::new());

/// [`translate`], remembering the last few results: every container start translates
/// (and so parses) the 60 KB default profile otherwise.
pub fn translate_cached(profile: &str, caps: &[String], arch: &HostArch) -> Result<LinuxSeccomp> {
    let lock = || TRANSLATIONS.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(t) = lock()
        .iter()
        .find(|t| t.caps == caps && t.arch == *arch && t.profile == profile)
    {
        return Ok(t.seccomp.clone());
    }
    let seccomp = translate(profile, caps, arch)?;
    let mut kept = lock();
    if kept.len() >= TRANSLATIONS_KEPT {
        kept.remove(0);
    }
    kept.push(Translation {
        profile: profile.to_string(),
        caps: caps.to_vec(),
        arch: arch.clone(),
        seccomp: seccomp.clone(),
    });
    Ok(seccomp)
}

/// Translates a Docker seccomp profile for a container with capabilities `caps`
/// (`CAP_*` names) on `arch`.
///
/// Rules are kept only when their `includes` all match (caps the container has, the host
/// architecture, a kernel at least `minKernel`) and their `excludes` do not.
pub fn translate(profile: &str, caps: &[String], arch: &HostArch) -> Result<LinuxSeccomp> {
    let profile: DockerProfile = serde_json::from_str(profile)
        .map_err(|e| RuntimeError::InvalidConfig(format!("decode seccomp profile: {e}")))?;
    let has_cap = |c: &String| caps.iter().any(|have| have.eq_ignore_ascii_case(c));

    let mut architectures = Vec::new();
    if let Some(map) = &profile.arch_map {
        if let Some(entry) = map.iter().find(|m| m.architecture == arch.scmp_arch) {
            architectures.push(entry.architecture.clone());
            architectures.extend(entry.sub_architectures.clone().unwrap_or_default());
        }
    } else if let Some(list) = &profile.architectures {
        architectures.extend(list.iter().cloned());
    }

    let mut syscalls = Vec::new();
    for rule in profile.syscalls.unwrap_or_default() {
        if let Some(inc) = &rule.includes {
            if let Some(c) = &inc.caps
                && !c.iter().all(has_cap)
            {
                continue;
            }
            if let Some(a) = &inc.arches
                && !a.iter().any(|x| x == arch.go_arch)
            {
                continue;
            }
            if let Some(k) = inc.min_kernel.as_deref().and_then(parse_kernel)
                && arch.kernel < k
            {
                continue;
            }
        }
        if let Some(exc) = &rule.excludes {
            if exc.caps.as_ref().is_some_and(|c| c.iter().any(has_cap)) {
                continue;
            }
            if exc
                .arches
                .as_ref()
                .is_some_and(|a| a.iter().any(|x| x == arch.go_arch))
            {
                continue;
            }
            if let Some(k) = exc.min_kernel.as_deref().and_then(parse_kernel)
                && arch.kernel >= k
            {
                continue;
            }
        }
        let mut names = rule.names.clone();
        if let Some(n) = rule.name {
            names.push(n);
        }
        if names.is_empty() {
            continue;
        }
        let mut out = json!({"names": names, "action": rule.action});
        if let Some(errno) = rule.errno_ret {
            out["errnoRet"] = json!(errno);
        }
        if let Some(args) = rule.args.filter(|a| !a.is_empty()) {
            out["args"] = json!(args);
        }
        syscalls.push(out);
    }

    let mut oci = json!({"defaultAction": profile.default_action, "syscalls": syscalls});
    if let Some(errno) = profile.default_errno_ret {
        oci["defaultErrnoRet"] = json!(errno);
    }
    if !architectures.is_empty() {
        oci["architectures"] = json!(architectures);
    }
    serde_json::from_value(oci)
        .map_err(|e| RuntimeError::InvalidConfig(format!("translate seccomp profile: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{Arch, LinuxSeccompAction};

    fn amd64() -> HostArch {
        HostArch {
            go_arch: "amd64",
            scmp_arch: "SCMP_ARCH_X86_64",
            kernel: (6, 1),
        }
    }

    fn rules_with(seccomp: &LinuxSeccomp, name: &str) -> Vec<oci_spec::runtime::LinuxSyscall> {
        seccomp
            .syscalls()
            .as_ref()
            .unwrap()
            .iter()
            .filter(|s| s.names().iter().any(|n| n == name))
            .cloned()
            .collect()
    }

    #[test]
    fn vendored_profile_matches_shared_copy() {
        let shared = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/spec/seccomp-default.json");
        if let Ok(bytes) = std::fs::read(&shared) {
            assert_eq!(
                bytes,
                DEFAULT_PROFILE.as_bytes(),
                "data/seccomp-default.json differs from {}",
                shared.display()
            );
        }
    }

    #[test]
    fn default_profile_arches_are_filtered_to_host() {
        let s = translate(DEFAULT_PROFILE, &[], &amd64()).unwrap();
        assert_eq!(s.default_action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(s.default_errno_ret(), Some(1));
        assert_eq!(
            s.architectures().as_ref().unwrap(),
            &vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32]
        );
        // arch_prctl is only for amd64/x32/x86
        assert!(!rules_with(&s, "arch_prctl").is_empty());
        // s390-only rules are gone
        assert!(rules_with(&s, "s390_pci_mmio_read").is_empty());
        // arm-only rules are gone
        assert!(rules_with(&s, "arm_fadvise64_64").is_empty());
    }

    #[test]
    fn cap_includes_and_excludes() {
        let without = translate(DEFAULT_PROFILE, &["CAP_CHOWN".into()], &amd64()).unwrap();
        // mount is only allowed with CAP_SYS_ADMIN
        assert!(rules_with(&without, "mount").is_empty());
        // clone gets the flag-restricted rule when CAP_SYS_ADMIN is missing
        let clone = rules_with(&without, "clone");
        assert_eq!(clone.len(), 1);
        assert!(clone[0].args().as_ref().is_some_and(|a| !a.is_empty()));
        // clone3 returns ENOSYS without CAP_SYS_ADMIN
        let clone3 = rules_with(&without, "clone3");
        assert_eq!(clone3.len(), 1);
        assert_eq!(clone3[0].errno_ret(), Some(38));

        let with = translate(DEFAULT_PROFILE, &["CAP_SYS_ADMIN".into()], &amd64()).unwrap();
        assert!(!rules_with(&with, "mount").is_empty());
        let clone = rules_with(&with, "clone");
        assert_eq!(clone.len(), 1);
        assert!(clone[0].args().as_ref().is_none_or(|a| a.is_empty()));
        assert!(
            rules_with(&with, "clone3")
                .iter()
                .all(|r| r.action() == LinuxSeccompAction::ScmpActAllow)
        );
    }

    #[test]
    fn min_kernel_is_respected() {
        let old = HostArch {
            kernel: (4, 4),
            ..amd64()
        };
        let s = translate(DEFAULT_PROFILE, &[], &old).unwrap();
        // the minKernel 4.8 rule holds the ptrace family
        assert!(rules_with(&s, "ptrace").is_empty());
        let s = translate(DEFAULT_PROFILE, &[], &amd64()).unwrap();
        assert!(!rules_with(&s, "ptrace").is_empty());
    }

    #[test]
    fn arch_excludes() {
        let profile = r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
            {"names":["a"],"action":"SCMP_ACT_ERRNO","excludes":{"arches":["amd64"]}},
            {"names":["b"],"action":"SCMP_ACT_ERRNO","excludes":{"arches":["arm64"]}}]}"#;
        let s = translate(profile, &[], &amd64()).unwrap();
        assert!(rules_with(&s, "a").is_empty());
        assert_eq!(rules_with(&s, "b").len(), 1);
        assert!(s.architectures().is_none());
    }

    #[test]
    fn cached_translation_matches_and_keys_on_capabilities() {
        let plain = translate_cached(DEFAULT_PROFILE, &[], &amd64()).unwrap();
        assert_eq!(plain, translate(DEFAULT_PROFILE, &[], &amd64()).unwrap());
        assert_eq!(
            translate_cached(DEFAULT_PROFILE, &[], &amd64()).unwrap(),
            plain
        );
        let admin = translate_cached(DEFAULT_PROFILE, &["CAP_SYS_ADMIN".into()], &amd64()).unwrap();
        assert!(!rules_with(&admin, "mount").is_empty());
        assert!(rules_with(&plain, "mount").is_empty());
        assert!(translate_cached("{", &[], &amd64()).is_err());
    }

    #[test]
    fn garbage_profile_is_an_error() {
        assert!(translate("{", &[], &amd64()).is_err());
    }
}
