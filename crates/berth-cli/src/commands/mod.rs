//! The command tree (docker's top-level commands plus the `builder`, `container`, `image`,
//! `network`, `system` and `volume` management groups, which reuse the same argument
//! structs) and its dispatch.

pub mod build;
pub mod changes;
pub mod completion;
pub mod container;
pub mod cp;
pub mod cp_tar;
pub mod exec;
#[cfg(test)]
pub mod fake_daemon;
pub mod image;
pub mod info;
pub mod inspect;
pub mod network;
pub mod operate;
pub mod progress;
pub mod ps;
pub mod registry;
pub mod run;
pub mod stats;
pub mod stream;
pub mod system;
pub mod transfer;
pub mod volume;

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Result;
use clap::Subcommand;

use crate::client::Client;

/// What every command gets: the API client and the docker config directory (credentials).
pub struct Ctx {
    /// The Engine API client.
    pub client: Arc<Client>,
    /// `--config`, `$DOCKER_CONFIG` or `~/.docker`.
    pub docker_config: PathBuf,
    /// `-D/--debug`.
    pub debug: bool,
}

/// An exit with a specific status, optionally printing a message first (docker's
/// `cli.StatusError`).
#[derive(Debug)]
pub struct StatusError {
    /// Process exit code.
    pub code: i32,
    /// Printed to stderr when set.
    pub message: Option<String>,
}

impl std::fmt::Display for StatusError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.message {
            Some(m) => f.write_str(m),
            None => write!(f, "exit status {}", self.code),
        }
    }
}

impl std::error::Error for StatusError {}

/// Makes a refused `network create` or `volume create` exit 125, as `run` and `create` do for
/// the engine's errors: the network-and-storage issue asks scripts to tell bad input (a bad
/// CIDR, overlapping subnets, a volume name with a slash) from other failures that way, where
/// the docker CLI exits 1.
pub fn refused_create(err: anyhow::Error) -> anyhow::Error {
    if err.downcast_ref::<StatusError>().is_some() {
        return err;
    }
    anyhow::Error::new(StatusError {
        code: 125,
        message: Some(format!("{err:#}")),
    })
}

/// Returns an error that makes the process exit with `code` without printing anything.
pub fn exit_code(code: i32) -> anyhow::Error {
    anyhow::Error::new(StatusError {
        code,
        message: None,
    })
}

/// Writes bytes to stdout in one go.
pub fn print_out(data: &[u8]) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(data)?;
    out.flush()?;
    Ok(())
}

/// Runs `op` for every argument, printing each success with `ok` and each failure on stderr,
/// and fails with exit code 1 when any failed (docker's multi-target commands).
pub async fn for_each_arg<F, Fut>(names: &[String], op: F) -> Result<()>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Result<Option<String>>>,
{
    // Like docker, the calls run concurrently, but a bounded number at a time: a thousand
    // at once only makes the daemon grow threads it then keeps.
    use futures_util::StreamExt;
    let results: Vec<_> = futures_util::stream::iter(names.iter().map(|n| op(n.clone())))
        .buffered(16)
        .collect()
        .await;
    let mut failed = Vec::new();
    let mut out = String::new();
    for r in results {
        match r {
            Ok(Some(line)) => {
                out.push_str(&line);
                out.push('\n');
            }
            Ok(None) => {}
            Err(e) => failed.push(format!("{e:#}")),
        }
    }
    print_out(out.as_bytes())?;
    if failed.is_empty() {
        Ok(())
    } else {
        Err(anyhow::Error::new(StatusError {
            code: 1,
            message: Some(failed.join("\n")),
        }))
    }
}

/// Top-level commands.
#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Create and run a new container from an image
    Run(run::RunArgs),
    /// Execute a command in a running container
    Exec(exec::ExecArgs),
    /// List containers
    Ps(ps::PsArgs),
    /// Build an image from a Dockerfile
    Build(build::BuildArgs),
    /// List images
    Images(image::ImagesArgs),
    /// Download an image from a registry
    Pull(transfer::PullArgs),
    /// Upload an image to a registry
    Push(transfer::PushArgs),
    /// Log in to a registry
    Login(registry::LoginArgs),
    /// Log out from a registry
    Logout(registry::LogoutArgs),
    /// Show the Docker version information
    Version(info::VersionArgs),
    /// Display system-wide information
    Info(info::InfoArgs),
    /// Attach local standard input, output, and error streams to a running container
    Attach(run::AttachArgs),
    /// Create a new image from a container's changes
    Commit(changes::CommitArgs),
    /// Create a new container
    Create(run::CreateArgs),
    /// Copy files/folders between a container and the local filesystem
    Cp(cp::CpArgs),
    /// Inspect changes to files or directories on a container's filesystem
    Diff(changes::DiffArgs),
    /// Get real time events from the server
    Events(system::EventsArgs),
    /// Export a container's filesystem as a tar archive
    Export(container::ExportArgs),
    /// Show the history of an image
    History(image::HistoryArgs),
    /// Import the contents from a tarball to create a filesystem image
    Import(transfer::ImportArgs),
    /// Return low-level information on Docker objects
    Inspect(system::InspectArgs),
    /// Kill one or more running containers
    Kill(container::KillArgs),
    /// Load an image from a tar archive or STDIN
    Load(transfer::LoadArgs),
    /// Fetch the logs of a container
    Logs(container::LogsArgs),
    /// List port mappings or a specific mapping for the container
    Port(container::PortArgs),
    /// Pause all processes within one or more containers
    Pause(operate::PauseArgs),
    /// Rename a container
    Rename(container::RenameArgs),
    /// Restart one or more containers
    Restart(container::RestartArgs),
    /// Remove one or more containers
    Rm(container::RmArgs),
    /// Remove one or more images
    Rmi(image::RmiArgs),
    /// Save one or more images to a tar archive (streamed to STDOUT by default)
    Save(transfer::SaveArgs),
    /// Start one or more stopped containers
    Start(run::StartArgs),
    /// Display a live stream of container(s) resource usage statistics
    Stats(stats::StatsArgs),
    /// Stop one or more running containers
    Stop(container::StopArgs),
    /// Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE
    Tag(image::TagArgs),
    /// Display the running processes of a container
    Top(container::TopArgs),
    /// Unpause all processes within one or more containers
    Unpause(operate::PauseArgs),
    /// Update configuration of one or more containers
    Update(operate::UpdateArgs),
    /// Block until one or more containers stop, then print their exit codes
    Wait(container::WaitArgs),
    /// Manage builds
    #[command(subcommand)]
    Builder(BuilderCmd),
    /// Manage containers
    #[command(subcommand)]
    Container(ContainerCmd),
    /// Manage images
    #[command(subcommand)]
    Image(ImageCmd),
    /// Manage networks
    #[command(subcommand)]
    Network(NetworkCmd),
    /// Manage Docker
    #[command(subcommand)]
    System(SystemCmd),
    /// Manage volumes
    #[command(subcommand)]
    Volume(VolumeCmd),
    /// Generate the autocompletion script for the specified shell
    Completion(completion::CompletionArgs),
}

/// `berth container …`
#[derive(Subcommand, Debug)]
pub enum ContainerCmd {
    /// Attach local standard input, output, and error streams to a running container
    Attach(run::AttachArgs),
    /// Create a new image from a container's changes
    Commit(changes::CommitArgs),
    /// Copy files/folders between a container and the local filesystem
    Cp(cp::CpArgs),
    /// Create a new container
    Create(run::CreateArgs),
    /// Inspect changes to files or directories on a container's filesystem
    Diff(changes::DiffArgs),
    /// Execute a command in a running container
    Exec(exec::ExecArgs),
    /// Export a container's filesystem as a tar archive
    Export(container::ExportArgs),
    /// Display detailed information on one or more containers
    Inspect(container::InspectArgs),
    /// Kill one or more running containers
    Kill(container::KillArgs),
    /// Fetch the logs of a container
    Logs(container::LogsArgs),
    /// List containers
    #[command(visible_aliases = ["ps", "list"])]
    Ls(ps::PsArgs),
    /// Pause all processes within one or more containers
    Pause(operate::PauseArgs),
    /// List port mappings or a specific mapping for the container
    Port(container::PortArgs),
    /// Remove all stopped containers
    Prune(container::PruneArgs),
    /// Rename a container
    Rename(container::RenameArgs),
    /// Restart one or more containers
    Restart(container::RestartArgs),
    /// Remove one or more containers
    #[command(visible_alias = "remove")]
    Rm(container::RmArgs),
    /// Create and run a new container from an image
    Run(run::RunArgs),
    /// Start one or more stopped containers
    Start(run::StartArgs),
    /// Display a live stream of container(s) resource usage statistics
    Stats(stats::StatsArgs),
    /// Stop one or more running containers
    Stop(container::StopArgs),
    /// Display the running processes of a container
    Top(container::TopArgs),
    /// Unpause all processes within one or more containers
    Unpause(operate::PauseArgs),
    /// Update configuration of one or more containers
    Update(operate::UpdateArgs),
    /// Block until one or more containers stop, then print their exit codes
    Wait(container::WaitArgs),
}

/// `berth builder …`
#[derive(Subcommand, Debug)]
pub enum BuilderCmd {
    /// Build an image from a Dockerfile
    Build(Box<build::BuildArgs>),
    /// Remove build cache
    Prune(build::BuilderPruneArgs),
}

/// `berth image …`
#[derive(Subcommand, Debug)]
pub enum ImageCmd {
    /// Build an image from a Dockerfile
    Build(build::BuildArgs),
    /// Show the history of an image
    History(image::HistoryArgs),
    /// Import the contents from a tarball to create a filesystem image
    Import(transfer::ImportArgs),
    /// Display detailed information on one or more images
    Inspect(image::ImageInspectArgs),
    /// Load an image from a tar archive or STDIN
    Load(transfer::LoadArgs),
    /// List images
    #[command(visible_aliases = ["images", "list"])]
    Ls(image::ImagesArgs),
    /// Remove unused images
    Prune(image::ImagePruneArgs),
    /// Download an image from a registry
    Pull(transfer::PullArgs),
    /// Upload an image to a registry
    Push(transfer::PushArgs),
    /// Remove one or more images
    #[command(visible_aliases = ["remove", "rmi"])]
    Rm(image::RmiArgs),
    /// Save one or more images to a tar archive (streamed to STDOUT by default)
    Save(transfer::SaveArgs),
    /// Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE
    Tag(image::TagArgs),
}

/// `berth network …`
#[derive(Subcommand, Debug)]
pub enum NetworkCmd {
    /// Connect a container to a network
    Connect(network::NetworkConnectArgs),
    /// Create a network
    Create(network::NetworkCreateArgs),
    /// Disconnect a container from a network
    Disconnect(network::NetworkDisconnectArgs),
    /// Display detailed information on one or more networks
    Inspect(network::NetworkInspectArgs),
    /// List networks
    #[command(visible_alias = "list")]
    Ls(network::NetworkLsArgs),
    /// Remove all unused networks
    Prune(network::NetworkPruneArgs),
    /// Remove one or more networks
    #[command(visible_alias = "remove")]
    Rm(network::NetworkRmArgs),
}

/// `berth volume …`
#[derive(Subcommand, Debug)]
pub enum VolumeCmd {
    /// Create a volume
    Create(volume::VolumeCreateArgs),
    /// Display detailed information on one or more volumes
    Inspect(volume::VolumeInspectArgs),
    /// List volumes
    #[command(visible_alias = "list")]
    Ls(volume::VolumeLsArgs),
    /// Remove unused local volumes
    Prune(volume::VolumePruneArgs),
    /// Remove one or more volumes
    #[command(visible_alias = "remove")]
    Rm(volume::VolumeRmArgs),
}

/// `berth system …`
#[derive(Subcommand, Debug)]
pub enum SystemCmd {
    /// Show docker disk usage
    Df(system::DfArgs),
    /// Get real time events from the server
    Events(system::EventsArgs),
    /// Display system-wide information
    Info(info::InfoArgs),
    /// Remove unused data
    Prune(system::SystemPruneArgs),
}

/// Runs a parsed command.
pub async fn dispatch(ctx: &Ctx, cmd: Cmd) -> Result<()> {
    match cmd {
        Cmd::Run(a) => run::run(ctx, a).await,
        Cmd::Exec(a) => exec::exec(ctx, a).await,
        Cmd::Ps(a) => ps::ps(ctx, a).await,
        Cmd::Build(a) => build::build(ctx, a).await,
        Cmd::Images(a) => image::images(ctx, a).await,
        Cmd::Pull(a) => transfer::pull(ctx, a).await,
        Cmd::Push(a) => transfer::push(ctx, a).await,
        Cmd::Login(a) => registry::login(ctx, a).await,
        Cmd::Logout(a) => registry::logout(ctx, a).await,
        Cmd::Version(a) => info::version(ctx, a).await,
        Cmd::Info(a) => info::info(ctx, a).await,
        Cmd::Attach(a) => run::attach(ctx, a).await,
        Cmd::Commit(a) => changes::commit(ctx, a).await,
        Cmd::Create(a) => run::create(ctx, a).await,
        Cmd::Diff(a) => changes::diff(ctx, a).await,
        Cmd::Cp(a) => cp::cp(ctx, a).await,
        Cmd::Pause(a) => operate::pause(ctx, a).await,
        Cmd::Stats(a) => stats::stats(ctx, a).await,
        Cmd::Unpause(a) => operate::unpause(ctx, a).await,
        Cmd::Update(a) => operate::update(ctx, a).await,
        Cmd::Events(a) => system::events(ctx, a).await,
        Cmd::Export(a) => container::export(ctx, a).await,
        Cmd::History(a) => image::history(ctx, a).await,
        Cmd::Import(a) => transfer::import(ctx, a).await,
        Cmd::Inspect(a) => system::inspect(ctx, a).await,
        Cmd::Kill(a) => container::kill(ctx, a).await,
        Cmd::Load(a) => transfer::load(ctx, a).await,
        Cmd::Logs(a) => container::logs(ctx, a).await,
        Cmd::Port(a) => container::port(ctx, a).await,
        Cmd::Rename(a) => container::rename(ctx, a).await,
        Cmd::Restart(a) => container::restart(ctx, a).await,
        Cmd::Rm(a) => container::rm(ctx, a).await,
        Cmd::Rmi(a) => image::rmi(ctx, a).await,
        Cmd::Save(a) => transfer::save(ctx, a).await,
        Cmd::Start(a) => run::start(ctx, a).await,
        Cmd::Stop(a) => container::stop(ctx, a).await,
        Cmd::Tag(a) => image::tag(ctx, a).await,
        Cmd::Top(a) => container::top(ctx, a).await,
        Cmd::Wait(a) => container::wait(ctx, a).await,
        Cmd::Builder(c) => match c {
            BuilderCmd::Build(a) => build::build(ctx, *a).await,
            BuilderCmd::Prune(a) => build::prune(ctx, a).await,
        },
        Cmd::Container(c) => match c {
            ContainerCmd::Attach(a) => run::attach(ctx, a).await,
            ContainerCmd::Commit(a) => changes::commit(ctx, a).await,
            ContainerCmd::Create(a) => run::create(ctx, a).await,
            ContainerCmd::Diff(a) => changes::diff(ctx, a).await,
            ContainerCmd::Cp(a) => cp::cp(ctx, a).await,
            ContainerCmd::Pause(a) => operate::pause(ctx, a).await,
            ContainerCmd::Stats(a) => stats::stats(ctx, a).await,
            ContainerCmd::Unpause(a) => operate::unpause(ctx, a).await,
            ContainerCmd::Update(a) => operate::update(ctx, a).await,
            ContainerCmd::Exec(a) => exec::exec(ctx, a).await,
            ContainerCmd::Export(a) => container::export(ctx, a).await,
            ContainerCmd::Inspect(a) => container::inspect(ctx, a).await,
            ContainerCmd::Kill(a) => container::kill(ctx, a).await,
            ContainerCmd::Logs(a) => container::logs(ctx, a).await,
            ContainerCmd::Ls(a) => ps::ps(ctx, a).await,
            ContainerCmd::Port(a) => container::port(ctx, a).await,
            ContainerCmd::Prune(a) => container::prune(ctx, a).await,
            ContainerCmd::Rename(a) => container::rename(ctx, a).await,
            ContainerCmd::Restart(a) => container::restart(ctx, a).await,
            ContainerCmd::Rm(a) => container::rm(ctx, a).await,
            ContainerCmd::Run(a) => run::run(ctx, a).await,
            ContainerCmd::Start(a) => run::start(ctx, a).await,
            ContainerCmd::Stop(a) => container::stop(ctx, a).await,
            ContainerCmd::Top(a) => container::top(ctx, a).await,
            ContainerCmd::Wait(a) => container::wait(ctx, a).await,
        },
        Cmd::Image(c) => match c {
            ImageCmd::Build(a) => build::build(ctx, a).await,
            ImageCmd::History(a) => image::history(ctx, a).await,
            ImageCmd::Import(a) => transfer::import(ctx, a).await,
            ImageCmd::Inspect(a) => image::inspect(ctx, a).await,
            ImageCmd::Load(a) => transfer::load(ctx, a).await,
            ImageCmd::Ls(a) => image::images(ctx, a).await,
            ImageCmd::Prune(a) => image::prune(ctx, a).await,
            ImageCmd::Pull(a) => transfer::pull(ctx, a).await,
            ImageCmd::Push(a) => transfer::push(ctx, a).await,
            ImageCmd::Rm(a) => image::rmi(ctx, a).await,
            ImageCmd::Save(a) => transfer::save(ctx, a).await,
            ImageCmd::Tag(a) => image::tag(ctx, a).await,
        },
        Cmd::Network(c) => match c {
            NetworkCmd::Connect(a) => network::connect(ctx, a).await,
            NetworkCmd::Create(a) => network::create(ctx, a).await,
            NetworkCmd::Disconnect(a) => network::disconnect(ctx, a).await,
            NetworkCmd::Inspect(a) => network::inspect(ctx, a).await,
            NetworkCmd::Ls(a) => network::ls(ctx, a).await,
            NetworkCmd::Prune(a) => network::prune(ctx, a).await,
            NetworkCmd::Rm(a) => network::rm(ctx, a).await,
        },
        Cmd::Volume(c) => match c {
            VolumeCmd::Create(a) => volume::create(ctx, a).await,
            VolumeCmd::Inspect(a) => volume::inspect(ctx, a).await,
            VolumeCmd::Ls(a) => volume::ls(ctx, a).await,
            VolumeCmd::Prune(a) => volume::prune(ctx, a).await,
            VolumeCmd::Rm(a) => volume::rm(ctx, a).await,
        },
        Cmd::System(c) => match c {
            SystemCmd::Df(a) => system::df(ctx, a).await,
            SystemCmd::Events(a) => system::events(ctx, a).await,
            SystemCmd::Info(a) => info::info(ctx, a).await,
            SystemCmd::Prune(a) => system::prune(ctx, a).await,
        },
        // Generated in main before any client exists: it needs the whole clap tree.
        Cmd::Completion(_) => Ok(()),
    }
}

/// Asks `message [y/N]` on stdout and reads one line of stdin (docker's `prompt.Confirm`).
pub fn confirm(message: &str) -> bool {
    print!("{message} [y/N] ");
    let _ = std::io::stdout().flush();
    let mut line = String::new();
    if std::io::stdin().read_line(&mut line).is_err() {
        return false;
    }
    line.trim().eq_ignore_ascii_case("y")
}

/// Builds the `filters` JSON from `--filter key=value` flags (docker's `filters.ParseFlag`).
pub fn parse_filters(flags: &[String]) -> Result<berth_api::filters::Filters> {
    let mut f = berth_api::filters::Filters::default();
    for flag in flags {
        let Some((k, v)) = flag.split_once('=') else {
            anyhow::bail!("bad format of filter (expected name=value)");
        };
        f.add(&k.trim().to_ascii_lowercase(), v.trim());
    }
    Ok(f)
}

/// Deserialises `null` as the type's default (the daemon may send `null` for empty lists).
pub fn de_null<'de, D, T>(d: D) -> std::result::Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + serde::Deserialize<'de>,
{
    use serde::Deserialize;
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// A string setting from `~/.docker/config.json` (`psFormat`, `imagesFormat`, `detachKeys`).
pub fn docker_config_string(ctx: &Ctx, key: &str) -> Option<String> {
    let data = std::fs::read(ctx.docker_config.join("config.json")).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&data).ok()?;
    v.get(key)?
        .as_str()
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_encode_like_the_go_cli() {
        let f = parse_filters(&[
            "status=running".into(),
            "label=x=y".into(),
            " Name = web ".into(),
        ])
        .unwrap();
        assert_eq!(
            f.to_json(),
            r#"{"label":{"x=y":true},"name":{"web":true},"status":{"running":true}}"#
        );
        assert!(
            parse_filters(&["novalue".into()])
                .unwrap_err()
                .to_string()
                .contains("bad format of filter")
        );
        assert!(parse_filters(&[]).unwrap().is_empty());
    }
}
