//! Executing a plan: the [`BuildBackend`] trait the daemon implements, and
//! an [`Executor`] that walks the plan stage by stage, building independent
//! stages concurrently and skipping every step whose cache key is known.

mod config;
mod executor;

pub use config::{
    CommandState, DEFAULT_PATH, HealthConfig, HistoryEntry, ImageConfig, apply_metadata,
    default_shell, resolve_dest, resolve_path,
};
pub use executor::{BuildOutput, ExecOptions, Executor, Progress, StageResult, StepStatus};

use std::fmt;
use std::future::Future;

use crate::cache::CacheKey;
use crate::context::ContextError;
use crate::error::ParseError;
use crate::instructions::{RunMount, RunNetwork, RunSecurity};
use crate::plan::Platform;

/// A base image as the backend resolved it.
#[derive(Debug, Clone)]
pub struct ResolvedImage<R> {
    /// Its filesystem.
    pub rootfs: R,
    /// Its configuration.
    pub config: ImageConfig,
    /// Its content digest (image ID or manifest digest); part of cache keys.
    pub digest: String,
    /// Its history.
    pub history: Vec<HistoryEntry>,
}

/// Where a RUN mount or COPY reads files from.
#[derive(Debug, Clone)]
pub enum FileSource<R> {
    /// The build context.
    Context,
    /// The filesystem of a stage or image.
    Rootfs(R),
}

/// A RUN mount with its source resolved.
#[derive(Debug, Clone)]
pub struct MountSpec<R> {
    /// The mount as written (expanded).
    pub mount: RunMount,
    /// For bind mounts (and cache mounts with `from=`): where the files come from.
    pub from: Option<FileSource<R>>,
}

/// A file made visible to a RUN step without being part of any layer
/// (a heredoc script run directly).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InlineFile {
    /// Absolute path in the container.
    pub path: String,
    /// Content.
    pub content: String,
    /// Permission bits.
    pub mode: u32,
}

/// Everything the backend needs to run one RUN step.
#[derive(Debug, Clone)]
pub struct RunSpec<R> {
    /// The process argv.
    pub argv: Vec<String>,
    /// Environment, `NAME=value`: image ENV, then ARGs in effect, then proxy args.
    pub env: Vec<String>,
    /// USER, if set.
    pub user: Option<String>,
    /// Working directory (created by the backend when missing).
    pub workdir: String,
    /// Network mode.
    pub network: RunNetwork,
    /// Security mode.
    pub security: RunSecurity,
    /// Mounts.
    pub mounts: Vec<MountSpec<R>>,
    /// Inline files (heredoc scripts).
    pub files: Vec<InlineFile>,
    /// The platform of the stage.
    pub platform: Platform,
}

/// One source of a COPY or ADD.
#[derive(Debug, Clone)]
pub enum CopyInput<R> {
    /// Paths of the build context.
    Context {
        /// The sources as written (cleaned, possibly with wildcards); they decide
        /// how things land in the destination (a directory copies its contents).
        sources: Vec<String>,
        /// Every context path these sources select after `--exclude`; the backend
        /// must copy nothing else.
        selected: Vec<String>,
    },
    /// Paths from a stage or image (`--from`).
    Rootfs {
        /// The filesystem to read.
        rootfs: R,
        /// The source paths (possibly with wildcards).
        sources: Vec<String>,
    },
    /// A file created from a heredoc.
    Heredoc {
        /// The file name (the heredoc delimiter).
        name: String,
        /// The content.
        content: String,
    },
    /// An ADD of a URL.
    Url {
        /// The URL.
        url: String,
        /// `--checksum`, to verify the download.
        checksum: Option<String>,
    },
}

/// Everything the backend needs to perform one COPY or ADD.
#[derive(Debug, Clone)]
pub struct CopySpec<R> {
    /// The sources.
    pub inputs: Vec<CopyInput<R>>,
    /// The destination, absolute (relative ones are joined to WORKDIR; a
    /// trailing `/` is kept: it means "into this directory").
    pub dest: String,
    /// `--chown`, to resolve against the image's /etc/passwd and /etc/group.
    pub chown: Option<String>,
    /// `--chmod`.
    pub chmod: Option<String>,
    /// `--link`.
    pub link: bool,
    /// `--parents`.
    pub parents: bool,
    /// `--exclude` patterns (already applied to context sources).
    pub excludes: Vec<String>,
    /// ADD semantics: extract local archives, fetch URLs.
    pub add: bool,
    /// `--keep-git-dir` of ADD.
    pub keep_git_dir: bool,
}

/// The effectful side of a build, implemented by the daemon with the store and runtime.
///
/// `Rootfs` is an opaque handle on a committed filesystem state (a snapshot
/// chain); `Change` is an uncommitted change on top of one, turned into a
/// layer by [`BuildBackend::commit`].
pub trait BuildBackend: Send + Sync + 'static {
    /// A committed filesystem state.
    type Rootfs: Clone + Send + Sync + fmt::Debug + 'static;
    /// An uncommitted change (the writable layer of a step).
    type Change: Send + 'static;
    /// The backend's error.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Resolves (pulling if needed) an image for a platform.
    fn resolve_image(
        &self,
        reference: &str,
        platform: &Platform,
    ) -> impl Future<Output = Result<ResolvedImage<Self::Rootfs>, Self::Error>> + Send;

    /// The empty filesystem of `FROM scratch`.
    fn scratch(&self) -> impl Future<Output = Result<Self::Rootfs, Self::Error>> + Send;

    /// Runs a step container on a writable layer over `parent`.
    fn run(
        &self,
        parent: &Self::Rootfs,
        spec: &RunSpec<Self::Rootfs>,
    ) -> impl Future<Output = Result<Self::Change, Self::Error>> + Send;

    /// Copies files onto a writable layer over `parent`.
    fn copy(
        &self,
        parent: &Self::Rootfs,
        spec: &CopySpec<Self::Rootfs>,
    ) -> impl Future<Output = Result<Self::Change, Self::Error>> + Send;

    /// Turns a change into a layer (added, changed and deleted files).
    fn commit(
        &self,
        change: Self::Change,
        history: &HistoryEntry,
    ) -> impl Future<Output = Result<Self::Rootfs, Self::Error>> + Send;

    /// The filesystem a step with this key produced before, if kept.
    fn cache_get(
        &self,
        key: &CacheKey,
    ) -> impl Future<Output = Result<Option<Self::Rootfs>, Self::Error>> + Send;

    /// Remembers the filesystem a step produced.
    fn cache_put(
        &self,
        key: &CacheKey,
        rootfs: &Self::Rootfs,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;
}

/// Why a build failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError<E: std::error::Error + 'static> {
    /// An instruction could not be expanded or validated.
    #[error(transparent)]
    Instruction(#[from] ParseError),
    /// The backend failed on a step.
    #[error("dockerfile line {line}: {keyword}: {source}")]
    Backend {
        /// Line of the step.
        line: usize,
        /// The instruction keyword.
        keyword: String,
        /// The backend's error.
        #[source]
        source: E,
    },
    /// Reading or selecting context files failed.
    #[error("dockerfile line {line}: {keyword}: {source}")]
    Context {
        /// Line of the step.
        line: usize,
        /// The instruction keyword.
        keyword: String,
        /// The context error.
        #[source]
        source: ContextError,
    },
    /// A step needs the build context but none was given.
    #[error(
        "dockerfile line {line}: {keyword}: this step reads the build context, but the build has none"
    )]
    NoContext {
        /// Line of the step.
        line: usize,
        /// The instruction keyword.
        keyword: String,
    },
    /// A build task stopped abnormally.
    #[error("build stage task failed: {0}")]
    Task(String),
}
