//! Seccomp filters compiled once, loaded by many containers.
//!
//! libcontainer builds the BPF program of a container's seccomp profile with libseccomp
//! inside every container's init process: for Docker's default profile (about 350
//! rules on three architectures) that is 10–15 ms of CPU on each start. The program
//! depends only on the profile, the libseccomp build and the kernel, so the daemon
//! compiles each distinct profile once ([`compile`], memoized in the process) and writes
//! the program into the bundle as [`FILE_NAME`]. The shim then hands libcontainer the
//! spec without `linux.seccomp` and loads the program itself, right before the
//! container's process is executed (see `shim::runtime`).
//!
//! The program is produced by the same libseccomp calls libcontainer 0.7 makes
//! (`libcontainer::seccomp::initialize_seccomp`), exported instead of loaded, so the
//! filter in force is the one libcontainer would have loaded. Profiles that need
//! libcontainer's cooperation at load time (a notify action, whose listener fd
//! libcontainer passes on) are not compiled here and keep the normal path.

use std::collections::HashSet;
use std::io::{Read, Seek};
use std::path::Path;
use std::sync::{Arc, Mutex};

use libseccomp::{ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext};
use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompFilterFlag, LinuxSeccompOperator,
};

use crate::error::{Result, RuntimeError};

/// The compiled program's file in a bundle, next to `config.json`.
pub const FILE_NAME: &str = "seccomp.bpf";

/// Size of one BPF instruction (`struct sock_filter`).
const INSN_LEN: usize = std::mem::size_of::<libc::sock_filter>();
/// The kernel's limit on a filter's length (`BPF_MAXINSNS`).
const MAX_INSNS: usize = 4096;
/// Distinct profiles kept compiled; a daemon normally sees a handful.
const MEMO_CAPACITY: usize = 32;

/// Compiled programs by the JSON of their profile.
static MEMO: Mutex<Vec<(String, Arc<[u8]>)>> = Mutex::new(Vec::new());

/// Whether the program of `seccomp` can be loaded without libcontainer's help: not with
/// a notify action or the flag that only goes with one.
pub fn can_precompile(seccomp: &LinuxSeccomp) -> bool {
    let notify = seccomp.default_action() == LinuxSeccompAction::ScmpActNotify
        || seccomp
            .syscalls()
            .iter()
            .flatten()
            .any(|s| s.action() == LinuxSeccompAction::ScmpActNotify);
    let wait_killable = seccomp
        .flags()
        .iter()
        .flatten()
        .any(|f| *f == LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv);
    !notify && !wait_killable
}

/// The `seccomp(2)` flag of an OCI filter flag; `None` for the one that needs a notify
/// listener (excluded by [`can_precompile`]).
fn load_flag(flag: LinuxSeccompFilterFlag) -> Option<libc::c_ulong> {
    match flag {
        LinuxSeccompFilterFlag::SeccompFilterFlagLog => Some(libc::SECCOMP_FILTER_FLAG_LOG),
        LinuxSeccompFilterFlag::SeccompFilterFlagTsync => Some(libc::SECCOMP_FILTER_FLAG_TSYNC),
        LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => {
            Some(libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW)
        }
        LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => None,
    }
}

/// The BPF program (raw `struct sock_filter` array) of `seccomp`, compiled on first use;
/// `None` when [`can_precompile`] says no.
pub fn compile(seccomp: &LinuxSeccomp) -> Result<Option<Arc<[u8]>>> {
    if !can_precompile(seccomp) {
        return Ok(None);
    }
    let key = serde_json::to_string(seccomp)
        .map_err(|e| RuntimeError::InvalidConfig(format!("seccomp profile: {e}")))?;
    if let Some((_, program)) = memo().iter().find(|(k, _)| *k == key) {
        return Ok(Some(program.clone()));
    }
    let program: Arc<[u8]> = export(seccomp)?.into();
    let mut memo = memo();
    if memo.len() >= MEMO_CAPACITY {
        memo.remove(0);
    }
    memo.push((key, program.clone()));
    Ok(Some(program))
}

fn memo() -> std::sync::MutexGuard<'static, Vec<(String, Arc<[u8]>)>> {
    MEMO.lock().unwrap_or_else(|p| p.into_inner())
}

fn scmp_error(what: &str, e: libseccomp::error::SeccompError) -> RuntimeError {
    RuntimeError::InvalidConfig(format!("seccomp profile: {what}: {e}"))
}

/// Builds the filter with libseccomp exactly as libcontainer does, and exports it.
fn export(seccomp: &LinuxSeccomp) -> Result<Vec<u8>> {
    let default_action = action(seccomp.default_action(), seccomp.default_errno_ret())?;
    let mut ctx =
        ScmpFilterContext::new(default_action).map_err(|e| scmp_error("create filter", e))?;
    for flag in seccomp.flags().iter().flatten() {
        match flag {
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => ctx.set_ctl_log(true),
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync => ctx.set_ctl_tsync(true),
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => ctx.set_ctl_ssb(true),
            LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => ctx.set_ctl_waitkill(true),
        }
        .map_err(|e| scmp_error(&format!("flag {flag:?}"), e))?;
    }
    for &a in seccomp.architectures().iter().flatten() {
        ctx.add_arch(arch(a))
            .map_err(|e| scmp_error(&format!("architecture {a:?}"), e))?;
    }
    // The no_new_privs bit is the runtime's business (the spec's `noNewPrivileges`).
    ctx.set_ctl_nnp(false)
        .map_err(|e| scmp_error("no_new_privs attribute", e))?;
    for rule in seccomp.syscalls().iter().flatten() {
        let act = action(rule.action(), rule.errno_ret())?;
        if act == default_action {
            // libseccomp refuses a rule with the default action; it would change nothing.
            continue;
        }
        for name in rule.names() {
            // A name this libseccomp does not know is a syscall the kernel lacks.
            let Ok(nr) = libseccomp::ScmpSyscall::from_name(name) else {
                continue;
            };
            let added = match rule.args() {
                Some(args) => {
                    let cmps: Vec<ScmpArgCompare> = args
                        .iter()
                        .map(|a| {
                            ScmpArgCompare::new(
                                a.index() as u32,
                                op(a.op(), a.value_two()),
                                a.value(),
                            )
                        })
                        .collect();
                    let mut seen = HashSet::new();
                    let repeated = args.iter().any(|a| !seen.insert(a.index()));
                    if repeated {
                        // One comparison per argument and rule: several conditions on
                        // the same argument become separate rules (runc does the same).
                        cmps.iter().try_for_each(|c| {
                            ctx.add_rule_conditional(act, nr, std::slice::from_ref(c))
                                .map(|_| ())
                        })
                    } else {
                        ctx.add_rule_conditional(act, nr, &cmps).map(|_| ())
                    }
                }
                None => ctx.add_rule(act, nr).map(|_| ()),
            };
            added.map_err(|e| scmp_error(&format!("rule for {name}"), e))?;
        }
    }
    let memfd = nix::sys::memfd::memfd_create(
        c"berth-seccomp",
        nix::sys::memfd::MemFdCreateFlag::MFD_CLOEXEC,
    )
    .map_err(|e| RuntimeError::io("create memfd for seccomp program", e.into()))?;
    let mut file = std::fs::File::from(memfd);
    ctx.export_bpf(&file)
        .map_err(|e| scmp_error("export program", e))?;
    let mut program = Vec::new();
    file.rewind()
        .and_then(|_| file.read_to_end(&mut program))
        .map_err(|e| RuntimeError::io("read seccomp program", e))?;
    check_len(program.len())?;
    Ok(program)
}

fn check_len(len: usize) -> Result<()> {
    if len == 0 || !len.is_multiple_of(INSN_LEN) || len / INSN_LEN > MAX_INSNS {
        return Err(RuntimeError::InvalidConfig(format!(
            "seccomp program of {len} bytes is not 1 to {MAX_INSNS} instructions"
        )));
    }
    Ok(())
}

fn action(action: LinuxSeccompAction, errno: Option<u32>) -> Result<ScmpAction> {
    let errno = errno.map_or(libc::EPERM, |e| e as i32);
    Ok(match action {
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            ScmpAction::KillThread
        }
        LinuxSeccompAction::ScmpActKillProcess => ScmpAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => ScmpAction::Trap,
        LinuxSeccompAction::ScmpActErrno => ScmpAction::Errno(errno),
        LinuxSeccompAction::ScmpActTrace => ScmpAction::Trace(errno.try_into().map_err(|_| {
            RuntimeError::InvalidConfig(format!("seccomp trace action: errno {errno} out of range"))
        })?),
        LinuxSeccompAction::ScmpActAllow => ScmpAction::Allow,
        LinuxSeccompAction::ScmpActNotify => ScmpAction::Notify,
        LinuxSeccompAction::ScmpActLog => ScmpAction::Log,
    })
}

fn op(op: LinuxSeccompOperator, value_two: Option<u64>) -> ScmpCompareOp {
    match op {
        LinuxSeccompOperator::ScmpCmpNe => ScmpCompareOp::NotEqual,
        LinuxSeccompOperator::ScmpCmpLt => ScmpCompareOp::Less,
        LinuxSeccompOperator::ScmpCmpLe => ScmpCompareOp::LessOrEqual,
        LinuxSeccompOperator::ScmpCmpEq => ScmpCompareOp::Equal,
        LinuxSeccompOperator::ScmpCmpGe => ScmpCompareOp::GreaterEqual,
        LinuxSeccompOperator::ScmpCmpGt => ScmpCompareOp::Greater,
        LinuxSeccompOperator::ScmpCmpMaskedEq => ScmpCompareOp::MaskedEqual(value_two.unwrap_or(0)),
    }
}

fn arch(arch: Arch) -> ScmpArch {
    match arch {
        Arch::ScmpArchNative => ScmpArch::Native,
        Arch::ScmpArchX86 => ScmpArch::X86,
        Arch::ScmpArchX86_64 => ScmpArch::X8664,
        Arch::ScmpArchX32 => ScmpArch::X32,
        Arch::ScmpArchArm => ScmpArch::Arm,
        Arch::ScmpArchAarch64 => ScmpArch::Aarch64,
        Arch::ScmpArchMips => ScmpArch::Mips,
        Arch::ScmpArchMips64 => ScmpArch::Mips64,
        Arch::ScmpArchMips64n32 => ScmpArch::Mips64N32,
        Arch::ScmpArchMipsel => ScmpArch::Mipsel,
        Arch::ScmpArchMipsel64 => ScmpArch::Mipsel64,
        Arch::ScmpArchMipsel64n32 => ScmpArch::Mipsel64N32,
        Arch::ScmpArchPpc => ScmpArch::Ppc,
        Arch::ScmpArchPpc64 => ScmpArch::Ppc64,
        Arch::ScmpArchPpc64le => ScmpArch::Ppc64Le,
        Arch::ScmpArchS390 => ScmpArch::S390,
        Arch::ScmpArchS390x => ScmpArch::S390X,
        Arch::ScmpArchParisc => ScmpArch::Parisc,
        Arch::ScmpArchParisc64 => ScmpArch::Parisc64,
        Arch::ScmpArchRiscv64 => ScmpArch::Riscv64,
        Arch::ScmpArchLoongarch64 => ScmpArch::Loongarch64,
        Arch::ScmpArchM68k => ScmpArch::M68k,
        Arch::ScmpArchSh => ScmpArch::Sh,
        Arch::ScmpArchSheb => ScmpArch::Sheb,
    }
}

/// Writes the program of `seccomp` into the bundle `dir` when it can be precompiled, and
/// removes a program left by an earlier start otherwise.
pub fn write_program(dir: &Path, seccomp: Option<&LinuxSeccomp>) -> Result<()> {
    let path = dir.join(FILE_NAME);
    let program = match seccomp {
        Some(s) => compile(s)?,
        None => None,
    };
    match program {
        Some(p) => std::fs::write(&path, &p[..])
            .map_err(|e| RuntimeError::io(format!("write {}", path.display()), e)),
        None => match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(RuntimeError::io(format!("remove {}", path.display()), e)),
        },
    }
}

/// A compiled filter ready to be installed in the calling thread.
#[derive(Debug, Clone)]
pub struct Program {
    insns: Vec<libc::sock_filter>,
    flags: libc::c_ulong,
}

impl Program {
    /// Reads the program at `path`, to be loaded with the flags `seccomp` asks for.
    pub fn read(path: &Path, seccomp: &LinuxSeccomp) -> Result<Program> {
        let bytes = std::fs::read(path)
            .map_err(|e| RuntimeError::io(format!("read {}", path.display()), e))?;
        check_len(bytes.len())?;
        let insns = bytes
            .chunks_exact(INSN_LEN)
            .map(|c| libc::sock_filter {
                code: u16::from_ne_bytes([c[0], c[1]]),
                jt: c[2],
                jf: c[3],
                k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
            })
            .collect();
        let mut flags = 0;
        for &flag in seccomp.flags().iter().flatten() {
            flags |= load_flag(flag).ok_or_else(|| {
                RuntimeError::InvalidConfig(format!(
                    "seccomp flag {flag:?} needs the runtime to load the filter"
                ))
            })?;
        }
        Ok(Program { insns, flags })
    }

    /// Installs the filter on the calling thread. Needs `CAP_SYS_ADMIN` or the
    /// no_new_privs bit, like any seccomp filter.
    pub fn load(&self) -> std::io::Result<()> {
        let prog = libc::sock_fprog {
            // check_len bounds the length to MAX_INSNS, which fits.
            len: self.insns.len() as libc::c_ushort,
            filter: self.insns.as_ptr().cast_mut(),
        };
        // SAFETY: `prog` points at `self.insns`, which outlives the call; the kernel copies
        // the program and does not keep the pointer.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                self.flags,
                &prog as *const libc::sock_fprog,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seccomp::{DEFAULT_PROFILE, HostArch, translate};

    fn default_profile() -> LinuxSeccomp {
        translate(DEFAULT_PROFILE, &[], &HostArch::detect((6, 1))).unwrap()
    }

    #[test]
    fn compiles_once_per_profile() {
        let profile = default_profile();
        let first = compile(&profile).unwrap().unwrap();
        let second = compile(&profile).unwrap().unwrap();
        assert!(Arc::ptr_eq(&first, &second));
        assert_eq!(first.len() % INSN_LEN, 0);
        let other = translate(
            DEFAULT_PROFILE,
            &["CAP_SYS_ADMIN".into()],
            &HostArch::detect((6, 1)),
        )
        .unwrap();
        assert_ne!(&compile(&other).unwrap().unwrap()[..], &first[..]);
    }

    #[test]
    fn notify_profiles_are_left_to_the_runtime() {
        let profile: LinuxSeccomp = serde_json::from_value(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]
        }))
        .unwrap();
        assert!(!can_precompile(&profile));
        assert!(compile(&profile).unwrap().is_none());
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), b"stale").unwrap();
        write_program(dir.path(), Some(&profile)).unwrap();
        assert!(!dir.path().join(FILE_NAME).exists());
    }

    #[test]
    fn bad_program_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        std::fs::write(&path, [0u8; 7]).unwrap();
        assert!(Program::read(&path, &default_profile()).is_err());
        std::fs::write(&path, []).unwrap();
        assert!(Program::read(&path, &default_profile()).is_err());
    }

    /// Loads the default profile's program in a child process and checks that it
    /// denies what Docker's profile denies and allows the rest.
    #[test]
    fn loaded_program_enforces_the_profile() {
        let dir = tempfile::tempdir().unwrap();
        let profile = default_profile();
        write_program(dir.path(), Some(&profile)).unwrap();
        let program = Program::read(&dir.path().join(FILE_NAME), &profile).unwrap();
        // SAFETY: the child only makes raw system calls and exits without returning.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                let code = if program.load().is_err() {
                    10
                } else {
                    // keyctl is denied with EPERM (errnoRet 1); getpid is allowed.
                    // SAFETY: plain system calls with integer arguments.
                    let keyctl = unsafe { libc::syscall(libc::SYS_keyctl, 0, 0, 0, 0, 0) };
                    let errno = std::io::Error::last_os_error().raw_os_error();
                    // SAFETY: as above.
                    let pid = unsafe { libc::syscall(libc::SYS_getpid) };
                    if keyctl == -1 && errno == Some(libc::EPERM) && pid > 0 {
                        0
                    } else {
                        11
                    }
                };
                // SAFETY: leaves the forked child without running the test harness's code.
                unsafe { libc::_exit(code) }
            }
            nix::unistd::ForkResult::Parent { child } => {
                let status = nix::sys::wait::waitpid(child, None).unwrap();
                assert_eq!(status, nix::sys::wait::WaitStatus::Exited(child, 0));
            }
        }
    }
}
