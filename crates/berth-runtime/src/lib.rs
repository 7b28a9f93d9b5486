//! Container runtime layer of berth.
//!
//! * [`spec`] turns a narrow [`spec::RunConfig`] into an OCI runtime spec the way Docker does.
//! * [`shim`] is the per-container supervisor (`berth-shim`): it creates the container with
//!   youki's libcontainer (or an OCI runtime binary such as runc), owns its stdio, writes the
//!   json-file log, records the exit status and serves a control socket. It outlives the daemon.
//! * [`client`] is the async client the daemon uses to spawn and talk to shims.
//! * [`logs`] reads (and, for the shim, writes) Docker's json-file log format.
//! * [`cgroups`] finds where to nest container cgroups and removes leftovers.
//! * [`bpf`] compiles seccomp profiles once, for the shim to load into each container.
//!
//! Nothing in here knows about images, registries, HTTP or Docker API types.

pub mod bpf;
pub mod cgroups;
pub mod client;
mod error;
pub mod logs;
pub mod protocol;
pub mod seccomp;
pub mod shim;
pub mod spec;

pub use client::{
    AttachStream, ExecStream, ShimClient, ShimOptions, StdioInput, StdioOutput, StdioStream,
    read_exit_file,
};
pub use error::{ErrorKind, Result, RuntimeError};
pub use protocol::{ExecSpec, ExecState, ExitStatus, ShimState, Status};
pub use spec::{
    CapabilityConfig, MountSpec, NetworkNamespace, ProcessUser, Resources, RunConfig,
    SeccompConfig, Ulimit, generate, install_init_binary, write_bundle,
};
