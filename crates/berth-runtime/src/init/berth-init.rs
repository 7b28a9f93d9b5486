//! `berth-init`: the minimal init for `--init` containers (what tini is for Docker).
//!
//! Usage: `berth-init -- COMMAND [ARGS...]`. Runs the command as a child, forwards every
//! catchable signal to it, reaps all zombies (it is pid 1 of the container) and exits with
//! the command's status (128 + signal for a death by signal).
//!
//! Built by build.rs as a separate, statically linked binary (`+crt-static`, std only, no
//! crates) so it runs in any root filesystem; it is bind-mounted at /sbin/docker-init.

use std::os::raw::c_int;
use std::os::unix::process::CommandExt;
use std::process::Command;

/// glibc's sigset_t on Linux: 1024 bits.
#[repr(C)]
struct SigSet([u64; 16]);

/// siginfo_t is 128 bytes; only the signal number (first field) is used.
#[repr(C)]
struct SigInfo {
    signo: c_int,
    _rest: [u8; 124],
}

unsafe extern "C" {
    fn sigfillset(set: *mut SigSet) -> c_int;
    fn sigemptyset(set: *mut SigSet) -> c_int;
    fn sigprocmask(how: c_int, set: *const SigSet, old: *mut SigSet) -> c_int;
    fn sigwaitinfo(set: *const SigSet, info: *mut SigInfo) -> c_int;
    fn waitpid(pid: c_int, status: *mut c_int, options: c_int) -> c_int;
    fn kill(pid: c_int, sig: c_int) -> c_int;
}

const SIG_BLOCK: c_int = 0;
const SIG_SETMASK: c_int = 2;
const SIGCHLD: c_int = 17;
const WNOHANG: c_int = 1;

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--") {
        args.remove(0);
    }
    if args.is_empty() {
        eprintln!("berth-init: usage: berth-init -- COMMAND [ARGS...]");
        std::process::exit(125);
    }
    let mut all = SigSet([0; 16]);
    // SAFETY: `all` is a valid sigset_t-sized buffer; the calls only write to it or read it.
    unsafe {
        sigfillset(&mut all);
        sigprocmask(SIG_BLOCK, &all, std::ptr::null_mut::<SigSet>());
    }
    let mut cmd = Command::new(&args[0]);
    cmd.args(&args[1..]);
    // The mask is inherited across exec: unblock everything in the child (std only resets
    // the SIGPIPE disposition).
    // SAFETY: the closure runs between fork and exec and only calls async-signal-safe
    // functions on a stack buffer.
    unsafe {
        cmd.pre_exec(|| {
            let mut none = SigSet([0; 16]);
            sigemptyset(&mut none);
            if sigprocmask(SIG_SETMASK, &none, std::ptr::null_mut()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = match cmd.spawn() {
        Ok(c) => c.id() as c_int,
        Err(e) => {
            eprintln!("berth-init: exec \"{}\": {e}", args[0]);
            let code = match e.kind() {
                std::io::ErrorKind::NotFound => 127,
                std::io::ErrorKind::PermissionDenied => 126,
                _ => 125,
            };
            std::process::exit(code);
        }
    };
    loop {
        let mut info = SigInfo { signo: 0, _rest: [0; 124] };
        // SAFETY: both pointers point to live, correctly sized buffers.
        let sig = unsafe { sigwaitinfo(&all, &mut info) };
        if sig < 0 {
            continue;
        }
        if sig != SIGCHLD {
            // SAFETY: kill takes plain integers.
            unsafe { kill(child, sig) };
            continue;
        }
        loop {
            let mut status: c_int = 0;
            // SAFETY: `status` is a valid out pointer.
            let pid = unsafe { waitpid(-1, &mut status, WNOHANG) };
            if pid <= 0 {
                break;
            }
            if pid == child {
                let code = if status & 0x7f == 0 { (status >> 8) & 0xff } else { 128 + (status & 0x7f) };
                std::process::exit(code);
            }
        }
    }
}
