//! The two ways the shim drives a container: youki's libcontainer linked in, or an OCI
//! runtime binary (runc) run as a command.

use std::fs;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use libcontainer::config::YoukiConfig;
use libcontainer::container::Container;
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;
use libcontainer::workload::default::DefaultExecutor;
use libcontainer::workload::{Executor, ExecutorError, ExecutorValidationError};
use oci_spec::runtime::{LinuxSeccomp, Spec};

use crate::bpf;
use crate::error::ErrorKind;

/// A failure reported by the shim to its client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ShimError {
    pub kind: ErrorKind,
    pub message: String,
}

impl ShimError {
    pub fn other(message: impl Into<String>) -> Self {
        ShimError {
            kind: ErrorKind::Other,
            message: message.into(),
        }
    }

    pub fn invalid_state(message: impl Into<String>) -> Self {
        ShimError {
            kind: ErrorKind::InvalidState,
            message: message.into(),
        }
    }
}

/// The container side of the stdio the shim hands to the runtime.
pub(crate) struct ContainerStdio {
    /// `None` when a terminal is used (the runtime creates the pty).
    pub stdin: Option<OwnedFd>,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
    /// Where the runtime sends the pty master.
    pub console_socket: Option<PathBuf>,
}

/// Formats an error with its whole source chain.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut msg = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !msg.contains(&part) {
            msg.push_str(": ");
            msg.push_str(&part);
        }
        source = s.source();
    }
    msg
}

/// Classifies a runtime's create/start failure, rewriting exec failures into the message
/// docker users know.
pub(crate) fn classify(message: &str, arg0: &str) -> ShimError {
    let lower = message.to_ascii_lowercase();
    let not_found = lower.contains("not found in $path")
        || lower.contains("executable file not found")
        || (lower.contains("exec: ") && lower.contains("no such file or directory"));
    let not_executable = lower.contains("does not have correct permissions")
        || (lower.contains("exec: ") && lower.contains("permission denied"));
    if not_found {
        let message = if arg0.contains('/') {
            format!("exec: \"{arg0}\": stat {arg0}: no such file or directory")
        } else {
            format!("exec: \"{arg0}\": executable file not found in $PATH")
        };
        ShimError {
            kind: ErrorKind::NotFound,
            message,
        }
    } else if not_executable {
        ShimError {
            kind: ErrorKind::NotExecutable,
            message: format!("exec: \"{arg0}\": permission denied"),
        }
    } else {
        ShimError::other(message.trim().to_string())
    }
}

pub(crate) enum Backend {
    Libcontainer {
        container: Box<Container>,
        /// The precompiled seccomp filter, loaded by the container's process and by every
        /// exec'd one (libcontainer's tenant path leaves `linux.seccomp` out of an exec's spec).
        seccomp: Option<bpf::Program>,
    },
    Oci {
        runtime: PathBuf,
        root: PathBuf,
        id: String,
        log: PathBuf,
    },
}

impl Backend {
    /// Creates the container; returns the backend and the container process's pid.
    pub fn create(
        id: &str,
        bundle: &Path,
        state_dir: &Path,
        runtime: Option<&Path>,
        stdio: ContainerStdio,
        arg0: &str,
    ) -> Result<(Backend, i32), ShimError> {
        match runtime {
            None => create_libcontainer(id, bundle, state_dir, stdio, arg0),
            Some(rt) => create_oci(rt, id, bundle, state_dir, stdio, arg0),
        }
    }

    pub fn start(&mut self, arg0: &str) -> Result<(), ShimError> {
        match self {
            Backend::Libcontainer { container, .. } => container
                .start()
                .map_err(|e| classify(&error_chain(&e), arg0)),
            Backend::Oci {
                runtime,
                root,
                id,
                log,
            } => {
                run_oci(runtime, root, log, &["start", id.as_str()]).map_err(|m| classify(&m, arg0))
            }
        }
    }

    /// Starts an exec process described by the OCI process file `process` in the running
    /// container; returns its host pid once it runs. `scratch` names per-exec files (pid
    /// file, runtime log) the backend may use and removes.
    pub fn exec(
        &self,
        process: &Path,
        stdio: ContainerStdio,
        scratch: &Path,
        arg0: &str,
    ) -> Result<i32, ShimError> {
        match self {
            Backend::Libcontainer { container, seccomp } => {
                exec_libcontainer(container, seccomp.as_ref(), process, stdio, arg0)
            }
            Backend::Oci {
                runtime, root, id, ..
            } => exec_oci(runtime, root, id, process, stdio, scratch, arg0),
        }
    }

    /// Adjusts an exec's OCI process for this backend: the precompiled filter is loaded by
    /// the process itself, which without no_new_privs needs `CAP_SYS_ADMIN` to do so (kept
    /// out of what its command runs with, see [`take_precompiled_seccomp`]). The
    /// container's process in the bundle got it at create already; this holds for an exec
    /// whatever its own capabilities are.
    pub fn prepare_exec_process(&self, process: &mut serde_json::Value) {
        if let Backend::Libcontainer {
            seccomp: Some(_), ..
        } = self
            && process["noNewPrivileges"].as_bool() != Some(true)
            && let Some(caps) = process.get_mut("capabilities")
        {
            grant_filter_capability(caps);
        }
    }

    /// Removes the runtime's state and the container's cgroup. The process must be gone.
    pub fn delete(&mut self) -> Result<(), ShimError> {
        match self {
            Backend::Libcontainer { container: c, .. } if has_poststop_hooks(c) => {
                c.delete(true).map_err(|e| {
                    ShimError::other(format!("delete container {}: {}", c.id(), error_chain(&e)))
                })
            }
            // With the process reaped, libcontainer's delete would remove the cgroups
            // (building a cgroup manager first: several hundred system calls walking
            // /proc, ~3 ms on the exit path) and the state directory. The shim removes
            // the cgroups itself right after, for every backend; the directory is left.
            Backend::Libcontainer { container: c, .. } => match fs::remove_dir_all(&c.root) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(ShimError::other(format!(
                    "delete container {}: remove {}: {e}",
                    c.id(),
                    c.root.display()
                ))),
            },
            Backend::Oci {
                runtime,
                root,
                id,
                log,
            } => run_oci(runtime, root, log, &["delete", "--force", id.as_str()])
                .map_err(|m| ShimError::other(format!("delete container {id}: {m}"))),
        }
    }
}

/// Whether the container's spec has poststop hooks, which only libcontainer's delete runs.
fn has_poststop_hooks(container: &Container) -> bool {
    YoukiConfig::load(&container.root)
        .ok()
        .and_then(|config| config.hooks)
        .and_then(|hooks| hooks.poststop().clone())
        .is_some_and(|hooks| !hooks.is_empty())
}

fn create_libcontainer(
    id: &str,
    bundle: &Path,
    state_dir: &Path,
    stdio: ContainerStdio,
    arg0: &str,
) -> Result<(Backend, i32), ShimError> {
    let root = state_dir.join("libcontainer");
    fs::create_dir_all(&root)
        .map_err(|e| ShimError::other(format!("create {}: {e}", root.display())))?;
    let mut builder = stdio_builder(id, &root, stdio)?;
    let seccomp = take_precompiled_seccomp(bundle)?;
    if let Some(program) = &seccomp {
        builder = builder.with_executor(FilteringExecutor {
            program: program.clone(),
        });
    }
    let container = builder
        .as_init(bundle)
        .with_systemd(false)
        .with_detach(true)
        .build()
        .map_err(|e| classify(&error_chain(&e), arg0))?;
    let pid = container
        .pid()
        .ok_or_else(|| ShimError::other(format!("container {id}: runtime reported no pid")))?;
    Ok((
        Backend::Libcontainer {
            container: Box::new(container),
            seccomp,
        },
        pid.as_raw(),
    ))
}

/// When the daemon precompiled the container's seccomp filter ([`bpf::FILE_NAME`] in the
/// bundle), takes `linux.seccomp` out of the bundle's config.json, so that libcontainer
/// does not compile the profile again in the container's init, and returns the program
/// for [`FilteringExecutor`] to load just before the container's command is executed.
///
/// Installing a filter needs `CAP_SYS_ADMIN` unless the no_new_privs bit is set, and by
/// then libcontainer has reduced the process to the container's capabilities. Without
/// no_new_privs the init therefore keeps `CAP_SYS_ADMIN` in its effective and permitted
/// sets only, never in the bounding, inheritable or ambient sets: the execve of the
/// container's command recomputes the capabilities from those three, so the command
/// never holds it (whether it runs as root or not). The profile itself was translated
/// for the container's real capabilities.
fn take_precompiled_seccomp(bundle: &Path) -> Result<Option<bpf::Program>, ShimError> {
    let program_path = bundle.join(bpf::FILE_NAME);
    if !program_path.exists() {
        return Ok(None);
    }
    let config_path = bundle.join("config.json");
    let data = fs::read(&config_path)
        .map_err(|e| ShimError::other(format!("read {}: {e}", config_path.display())))?;
    let mut spec: serde_json::Value = serde_json::from_slice(&data)
        .map_err(|e| ShimError::other(format!("decode {}: {e}", config_path.display())))?;
    let Some(profile) = spec
        .get_mut("linux")
        .and_then(|l| l.as_object_mut())
        .and_then(|l| l.remove("seccomp"))
    else {
        return Ok(None);
    };
    let profile: LinuxSeccomp = serde_json::from_value(profile)
        .map_err(|e| ShimError::other(format!("decode seccomp profile: {e}")))?;
    if !bpf::can_precompile(&profile) {
        return Ok(None);
    }
    let program =
        bpf::Program::read(&program_path, &profile).map_err(|e| ShimError::other(e.to_string()))?;
    let no_new_privs = spec["process"]["noNewPrivileges"].as_bool() == Some(true);
    if !no_new_privs {
        grant_filter_capability(&mut spec["process"]["capabilities"]);
    }
    let rewritten = serde_json::to_vec(&spec)
        .map_err(|e| ShimError::other(format!("encode {}: {e}", config_path.display())))?;
    // In place: nothing else reads the bundle while the shim creates the container, and
    // the daemon writes it afresh for every start.
    fs::write(&config_path, rewritten)
        .map_err(|e| ShimError::other(format!("write {}: {e}", config_path.display())))?;
    Ok(Some(program))
}

/// Adds `CAP_SYS_ADMIN` to the effective and permitted sets of an OCI capabilities
/// object (see [`take_precompiled_seccomp`]). A set the spec leaves out is one
/// libcontainer does not reduce, so it keeps the capability anyway.
fn grant_filter_capability(caps: &mut serde_json::Value) {
    const CAP: &str = "CAP_SYS_ADMIN";
    for set in ["effective", "permitted"] {
        if let Some(list) = caps.get_mut(set).and_then(|l| l.as_array_mut())
            && !list.iter().any(|c| c == CAP)
        {
            list.push(CAP.into());
        }
    }
}

/// libcontainer's default executor (execvp of the container's command), preceded by the
/// installation of a precompiled seccomp filter.
#[derive(Clone)]
struct FilteringExecutor {
    program: bpf::Program,
}

impl Executor for FilteringExecutor {
    fn exec(&self, spec: &Spec) -> Result<(), ExecutorError> {
        // The command must never run unfiltered: a failure here ends the init.
        self.program
            .load()
            .map_err(|e| ExecutorError::Other(format!("load seccomp filter: {e}")))?;
        DefaultExecutor {}.exec(spec)
    }

    fn validate(&self, spec: &Spec) -> Result<(), ExecutorValidationError> {
        DefaultExecutor {}.validate(spec)
    }
}

/// A libcontainer builder for container `id` with its state under `root`, wired to `stdio`
/// (pipes, or a console socket for a terminal); shared by create and exec.
fn stdio_builder(
    id: &str,
    root: &Path,
    stdio: ContainerStdio,
) -> Result<ContainerBuilder, ShimError> {
    let mut builder = ContainerBuilder::new(id.to_string(), SyscallType::Linux)
        .with_root_path(root)
        .map_err(|e| {
            ShimError::other(format!(
                "libcontainer root {}: {}",
                root.display(),
                error_chain(&e)
            ))
        })?;
    if let Some(inp) = stdio.stdin {
        builder = builder.with_stdin(inp);
    }
    if let Some(out) = stdio.stdout {
        builder = builder.with_stdout(out);
    }
    if let Some(err) = stdio.stderr {
        builder = builder.with_stderr(err);
    }
    Ok(builder.with_console_socket(stdio.console_socket.as_ref()))
}

/// Runs `f` with the signal state a new container process must start with: nothing
/// blocked (the shim blocks SIGCHLD for its signalfd) and SIGPIPE at its default (Rust
/// ignores it). Children forked inside `f` inherit that state across exec. A SIGCHLD that
/// arrives meanwhile is discarded, so the caller reaps afterwards.
fn with_default_signals<T>(f: impl FnOnce() -> T) -> Result<T, ShimError> {
    use nix::sys::signal::{SigHandler, SigSet, SigmaskHow, Signal, signal};
    let err = |what: &str, e: nix::Error| ShimError::other(format!("{what}: {e}"));
    let mut saved = SigSet::empty();
    nix::sys::signal::pthread_sigmask(
        SigmaskHow::SIG_SETMASK,
        Some(&SigSet::empty()),
        Some(&mut saved),
    )
    .map_err(|e| err("unblock signals", e))?;
    // SAFETY: the shim is single-threaded; SIG_DFL installs no handler.
    let previous = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) };
    let result = f();
    if let Ok(previous) = previous {
        // SAFETY: as above; `previous` is SIG_IGN or SIG_DFL, never a handler.
        unsafe { signal(Signal::SIGPIPE, previous) }.map_err(|e| err("restore SIGPIPE", e))?;
    }
    saved
        .thread_set_mask()
        .map_err(|e| err("restore signal mask", e))?;
    Ok(result)
}

/// Starts an exec through libcontainer's tenant builder. libcontainer 0.7 builds a tenant's
/// spec without `linux.seccomp`, so an exec'd process would run unfiltered; with a
/// precompiled program the exec gets the [`FilteringExecutor`] of the container's process,
/// which loads the same filter just before its `execve` (runc filters its execs too).
fn exec_libcontainer(
    container: &Container,
    seccomp: Option<&bpf::Program>,
    process: &Path,
    stdio: ContainerStdio,
    arg0: &str,
) -> Result<i32, ShimError> {
    let dir = &container.root;
    let root = dir
        .parent()
        .ok_or_else(|| ShimError::other(format!("libcontainer state dir {}", dir.display())))?;
    let mut builder = stdio_builder(container.id(), root, stdio)?;
    if let Some(program) = seccomp {
        builder = builder.with_executor(FilteringExecutor {
            program: program.clone(),
        });
    }
    let tenant = builder
        .as_tenant()
        .with_process(Some(process))
        .with_detach(true);
    let built = with_default_signals(|| tenant.build())?;
    // The tenant builder leaves its notify socket (and console socket link) behind.
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with("tenant-") {
                let _ = fs::remove_file(e.path());
            }
        }
    }
    built
        .map(|pid| pid.as_raw())
        .map_err(|e| classify(&error_chain(&e), arg0))
}

fn exec_oci(
    runtime: &Path,
    root: &Path,
    id: &str,
    process: &Path,
    stdio: ContainerStdio,
    scratch: &Path,
    arg0: &str,
) -> Result<i32, ShimError> {
    let log = scratch.with_extension("log");
    let pid_file = scratch.with_extension("pid");
    let mut cmd = unmasked_command(runtime);
    cmd.arg("--root")
        .arg(root)
        .arg("--log")
        .arg(&log)
        .args(["--log-format", "json", "exec", "--detach", "--pid-file"])
        .arg(&pid_file)
        .arg("--process")
        .arg(process);
    if let Some(sock) = &stdio.console_socket {
        cmd.arg("--console-socket").arg(sock);
    }
    cmd.arg(id);
    // runc hands its own stdio to the process.
    cmd.stdin(stdio.stdin.map_or_else(Stdio::null, Stdio::from));
    cmd.stdout(stdio.stdout.map_or_else(Stdio::null, Stdio::from));
    cmd.stderr(stdio.stderr.map_or_else(Stdio::null, Stdio::from));
    let status = cmd.status();
    drop(cmd);
    let pid = fs::read_to_string(&pid_file)
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok());
    let failure = last_log_error(&log);
    let _ = fs::remove_file(&pid_file);
    let _ = fs::remove_file(&log);
    let status = status.map_err(|e| ShimError::other(format!("run {}: {e}", runtime.display())))?;
    if !status.success() {
        let msg = failure.unwrap_or_else(|| format!("{} exec failed: {status}", runtime.display()));
        return Err(classify(&msg, arg0));
    }
    pid.ok_or_else(|| ShimError::other(format!("read pid file {}", pid_file.display())))
}

/// Last error message runc wrote to its json log.
fn last_log_error(log: &Path) -> Option<String> {
    let data = fs::read_to_string(log).ok()?;
    data.lines().rev().find_map(|l| {
        let v: serde_json::Value = serde_json::from_str(l).ok()?;
        (v["level"] == "error" || v["level"] == "fatal")
            .then(|| v["msg"].as_str().map(String::from))?
    })
}

/// A command whose child starts with an empty signal mask (the shim blocks SIGCHLD and
/// the mask survives exec).
fn unmasked_command(program: &Path) -> Command {
    let mut cmd = Command::new(program);
    // SAFETY: runs between fork and exec; sigprocmask is async-signal-safe and the set
    // lives on the child's stack.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::signal::SigSet::empty()
                .thread_set_mask()
                .map_err(std::io::Error::from)
        });
    }
    cmd
}

fn run_oci(runtime: &Path, root: &Path, log: &Path, args: &[&str]) -> Result<(), String> {
    let out = unmasked_command(runtime)
        .arg("--root")
        .arg(root)
        .arg("--log")
        .arg(log)
        .args(["--log-format", "json"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("run {}: {e}", runtime.display()))?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    Err(last_log_error(log)
        .or((!stderr.is_empty()).then_some(stderr))
        .unwrap_or_else(|| format!("{} {} failed: {}", runtime.display(), args[0], out.status)))
}

fn create_oci(
    runtime: &Path,
    id: &str,
    bundle: &Path,
    state_dir: &Path,
    stdio: ContainerStdio,
    arg0: &str,
) -> Result<(Backend, i32), ShimError> {
    let root = state_dir.join("runc");
    let log = state_dir.join("runtime.log");
    let pid_file = state_dir.join("container.pid");
    let mut cmd = unmasked_command(runtime);
    cmd.arg("--root")
        .arg(&root)
        .arg("--log")
        .arg(&log)
        .args(["--log-format", "json", "create"]);
    cmd.arg("--bundle")
        .arg(bundle)
        .arg("--pid-file")
        .arg(&pid_file);
    if let Some(sock) = &stdio.console_socket {
        cmd.arg("--console-socket").arg(sock);
    }
    cmd.arg(id);
    // runc passes its own stdio through to the container process.
    cmd.stdin(stdio.stdin.map_or_else(Stdio::null, Stdio::from));
    cmd.stdout(stdio.stdout.map_or_else(Stdio::null, Stdio::from));
    cmd.stderr(stdio.stderr.map_or_else(Stdio::null, Stdio::from));
    let status = cmd
        .status()
        .map_err(|e| ShimError::other(format!("run {}: {e}", runtime.display())))?;
    drop(cmd);
    if !status.success() {
        let msg = last_log_error(&log)
            .unwrap_or_else(|| format!("{} create failed: {status}", runtime.display()));
        return Err(classify(&msg, arg0));
    }
    let pid = fs::read_to_string(&pid_file)
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
        .ok_or_else(|| ShimError::other(format!("read pid file {}", pid_file.display())))?;
    Ok((
        Backend::Oci {
            runtime: runtime.to_path_buf(),
            root,
            id: id.to_string(),
            log,
        },
        pid,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_capability_goes_only_into_effective_and_permitted() {
        let mut caps = serde_json::json!({
            "bounding": ["CAP_CHOWN"],
            "effective": ["CAP_CHOWN"],
            "permitted": ["CAP_CHOWN", "CAP_SYS_ADMIN"],
        });
        grant_filter_capability(&mut caps);
        assert_eq!(caps["bounding"], serde_json::json!(["CAP_CHOWN"]));
        assert_eq!(
            caps["effective"],
            serde_json::json!(["CAP_CHOWN", "CAP_SYS_ADMIN"])
        );
        assert_eq!(
            caps["permitted"],
            serde_json::json!(["CAP_CHOWN", "CAP_SYS_ADMIN"])
        );
        // Sets the spec leaves out stay out: libcontainer leaves those alone.
        let mut partial = serde_json::json!({"bounding": ["CAP_CHOWN"]});
        grant_filter_capability(&mut partial);
        assert_eq!(partial, serde_json::json!({"bounding": ["CAP_CHOWN"]}));
    }

    #[test]
    fn classifies_exec_failures() {
        let e = classify(
            "error in executing process : executable 'nosuchcmd' not found in $PATH",
            "nosuchcmd",
        );
        assert_eq!(e.kind, ErrorKind::NotFound);
        assert_eq!(
            e.message,
            "exec: \"nosuchcmd\": executable file not found in $PATH"
        );
        let e = classify(
            "runc create failed: unable to start container process: exec: \"/nope\": stat /nope: no such file or directory",
            "/nope",
        );
        assert_eq!(e.kind, ErrorKind::NotFound);
        assert_eq!(
            e.message,
            "exec: \"/nope\": stat /nope: no such file or directory"
        );
        let e = classify(
            "executable '/etc/passwd' at path '\"/etc/passwd\"' does not have correct permissions",
            "/etc/passwd",
        );
        assert_eq!(e.kind, ErrorKind::NotExecutable);
        assert_eq!(e.message, "exec: \"/etc/passwd\": permission denied");
        let e = classify(
            "unable to apply cgroup configuration: permission denied",
            "sh",
        );
        assert_eq!(e.kind, ErrorKind::Other);
    }
}
