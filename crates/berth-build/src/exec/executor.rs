//! The executor: stages in dependency order, independent ones concurrently.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use tokio::sync::mpsc::UnboundedSender;
use tokio::task::JoinSet;

use super::config::{
    CommandState, DEFAULT_PATH, HistoryEntry, ImageConfig, apply_metadata, resolve_dest,
};
use super::{
    BuildBackend, BuildError, CopyInput, CopySpec, FileSource, InlineFile, MountSpec,
    ResolvedImage, RunSpec,
};
use crate::cache::CacheKey;
use crate::context::{ContextIndex, clean_path};
use crate::expand::Lexer;
use crate::instructions::{
    Command, CopySource, FileArgs, Instruction, InstructionKind, MountKind, RunInstr, RunNetwork,
    RunSecurity, parse_trigger,
};
use crate::parser::heredoc_name;
use crate::plan::{Plan, PlannedStage, SourceRef, StageBase};

/// The state of a finished stage.
#[derive(Debug, Clone)]
pub struct StageResult<R> {
    /// Its filesystem.
    pub rootfs: R,
    /// Its configuration.
    pub config: ImageConfig,
    /// The key of its last step.
    pub key: CacheKey,
    /// Its history (the base image's, then one entry per step).
    pub history: Vec<HistoryEntry>,
}

/// The outcome of a build.
#[derive(Debug, Clone)]
pub struct BuildOutput<R> {
    /// The target stage.
    pub target: StageResult<R>,
    /// Steps answered by the cache.
    pub cached_steps: usize,
    /// Steps that ran (RUN, COPY, ADD).
    pub executed_steps: usize,
}

/// Where a step is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepStatus {
    /// The step began.
    Started,
    /// The step was answered by the cache.
    Cached,
    /// The step finished.
    Done {
        /// Wall time in milliseconds.
        elapsed_ms: u64,
    },
}

/// A progress event for displays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// The stage name or index.
    pub stage: String,
    /// The instruction text.
    pub step: String,
    /// The status.
    pub status: StepStatus,
}

/// Options of one build run.
#[derive(Debug, Clone, Default)]
pub struct ExecOptions {
    /// Ignore the cache (results are still stored).
    pub no_cache: bool,
    /// Receives progress events.
    pub progress: Option<UnboundedSender<Progress>>,
}

/// Runs plans against a backend.
pub struct Executor<B: BuildBackend> {
    backend: Arc<B>,
    context: Option<Arc<ContextIndex>>,
    options: ExecOptions,
}

struct Shared<B: BuildBackend> {
    backend: Arc<B>,
    context: Option<Arc<ContextIndex>>,
    options: ExecOptions,
    plan: Arc<Plan>,
    cached: AtomicUsize,
    executed: AtomicUsize,
}

type StageOutcome<B> = (
    usize,
    Result<StageResult<<B as BuildBackend>::Rootfs>, BuildError<<B as BuildBackend>::Error>>,
);

impl<B: BuildBackend> Executor<B> {
    /// An executor over `backend`, reading COPY sources from `context` (if any).
    pub fn new(backend: Arc<B>, context: Option<Arc<ContextIndex>>, options: ExecOptions) -> Self {
        Executor {
            backend,
            context,
            options,
        }
    }

    /// Builds the plan's target: every needed stage once its dependencies are
    /// done, independent stages at the same time. The first failure stops the build.
    pub async fn build(
        &self,
        plan: Arc<Plan>,
    ) -> Result<BuildOutput<B::Rootfs>, BuildError<B::Error>> {
        let shared = Arc::new(Shared {
            backend: self.backend.clone(),
            context: self.context.clone(),
            options: self.options.clone(),
            plan: plan.clone(),
            cached: AtomicUsize::new(0),
            executed: AtomicUsize::new(0),
        });
        let mut done: HashMap<usize, Arc<StageResult<B::Rootfs>>> = HashMap::new();
        let mut started: HashSet<usize> = HashSet::new();
        let mut tasks: JoinSet<StageOutcome<B>> = JoinSet::new();
        loop {
            for &index in &plan.order {
                let stage = &plan.stages[index];
                if started.contains(&index) || !stage.deps.iter().all(|d| done.contains_key(d)) {
                    continue;
                }
                started.insert(index);
                let deps: HashMap<usize, Arc<StageResult<B::Rootfs>>> =
                    stage.deps.iter().map(|d| (*d, done[d].clone())).collect();
                let shared = shared.clone();
                tasks.spawn(async move { (index, run_stage(&shared, index, &deps).await) });
            }
            match tasks.join_next().await {
                None => break,
                Some(Ok((index, Ok(result)))) => {
                    done.insert(index, Arc::new(result));
                }
                Some(Ok((_, Err(e)))) => {
                    tasks.abort_all();
                    return Err(e);
                }
                Some(Err(e)) => {
                    tasks.abort_all();
                    return Err(BuildError::Task(e.to_string()));
                }
            }
        }
        let target = done
            .remove(&plan.target)
            .ok_or_else(|| BuildError::Task("the target stage was not built".to_string()))?;
        Ok(BuildOutput {
            target: Arc::unwrap_or_clone(target),
            cached_steps: shared.cached.load(Ordering::Relaxed),
            executed_steps: shared.executed.load(Ordering::Relaxed),
        })
    }
}

/// The mutable state of a stage while its steps run.
struct StageState<R> {
    rootfs: R,
    config: ImageConfig,
    key: CacheKey,
    history: Vec<HistoryEntry>,
    /// ARG values in effect, in declaration order.
    args: Vec<(String, String)>,
    commands: CommandState,
    images: HashMap<String, ResolvedImage<R>>,
}

impl<R> StageState<R> {
    /// Variables for expansion: ARGs, overridden by ENV of the same name.
    fn vars(&self) -> Vec<(String, String)> {
        let mut vars = self.args.clone();
        vars.extend(self.config.env_pairs());
        vars
    }

    fn set_arg(&mut self, name: &str, value: String) {
        match self.args.iter_mut().find(|(k, _)| k == name) {
            Some(slot) => slot.1 = value,
            None => self.args.push((name.to_string(), value)),
        }
    }
}

fn backend_error<E: std::error::Error>(
    instruction: &Instruction,
) -> impl FnOnce(E) -> BuildError<E> + '_ {
    move |source| BuildError::Backend {
        line: instruction.line,
        keyword: instruction.keyword().to_string(),
        source,
    }
}

async fn run_stage<B: BuildBackend>(
    shared: &Shared<B>,
    index: usize,
    deps: &HashMap<usize, Arc<StageResult<B::Rootfs>>>,
) -> Result<StageResult<B::Rootfs>, BuildError<B::Error>> {
    let plan = &shared.plan;
    let stage = &plan.stages[index];
    let from_line = stage.stage.line;
    let from_error = |source| BuildError::Backend {
        line: from_line,
        keyword: "FROM".into(),
        source,
    };
    let from_text = match &stage.stage.from.stage_name {
        Some(name) => format!("FROM {} AS {name}", stage.stage.from.image),
        None => format!("FROM {}", stage.stage.from.image),
    };
    report(shared, stage, &from_text, StepStatus::Started);
    let started = Instant::now();
    let (rootfs, mut config, key, history, inherit_triggers) = match &stage.base {
        StageBase::Scratch => {
            let rootfs = shared.backend.scratch().await.map_err(from_error)?;
            (
                rootfs,
                ImageConfig::default(),
                CacheKey::base("scratch", &stage.platform),
                Vec::new(),
                false,
            )
        }
        StageBase::Image(reference) => {
            let image = shared
                .backend
                .resolve_image(reference, &stage.platform)
                .await
                .map_err(from_error)?;
            let key = CacheKey::base(&image.digest, &stage.platform);
            (image.rootfs, image.config, key, image.history, true)
        }
        StageBase::Stage(i) => {
            let parent = &deps[i];
            (
                parent.rootfs.clone(),
                parent.config.clone(),
                parent.key.clone(),
                parent.history.clone(),
                true,
            )
        }
    };
    report(
        shared,
        stage,
        &from_text,
        StepStatus::Done {
            elapsed_ms: started.elapsed().as_millis() as u64,
        },
    );
    // As BuildKit does: every stage has a PATH, so `$PATH` expands and RUN finds its shell.
    if config.env_value("PATH").is_none() {
        config.set_env("PATH", DEFAULT_PATH);
    }
    let triggers = if inherit_triggers {
        std::mem::take(&mut config.on_build)
    } else {
        Vec::new()
    };
    let mut state = StageState {
        rootfs,
        config,
        key,
        history,
        args: Vec::new(),
        commands: CommandState::default(),
        images: HashMap::new(),
    };
    let mut steps: Vec<(Option<usize>, Instruction)> = Vec::new();
    for expression in &triggers {
        let mut trigger = parse_trigger(expression)?;
        trigger.line = from_line;
        trigger.end_line = from_line;
        steps.push((None, trigger));
    }
    steps.extend(
        stage
            .stage
            .instructions
            .iter()
            .cloned()
            .enumerate()
            .map(|(i, ins)| (Some(i), ins)),
    );
    let lexer = Lexer::new(plan.escape);
    for (position, instruction) in &steps {
        let expanded = instruction.expand(&lexer, &state.vars())?;
        let sources = match position {
            Some(p) => stage.sources.get(p).cloned().unwrap_or_default(),
            None => trigger_sources(&expanded),
        };
        run_step(shared, stage, deps, &mut state, &expanded, &sources).await?;
    }
    Ok(StageResult {
        rootfs: state.rootfs,
        config: state.config,
        key: state.key,
        history: state.history,
    })
}

/// `--from` references of an inherited ONBUILD trigger: the plan never saw
/// them, and the stages of the base image's Dockerfile do not exist here, so
/// they name images.
fn trigger_sources(trigger: &Instruction) -> Vec<Option<SourceRef>> {
    match &trigger.kind {
        InstructionKind::Copy(copy) => vec![copy.from.clone().map(SourceRef::Image)],
        InstructionKind::Run(run) => run
            .mounts
            .iter()
            .map(|m| m.from.clone().map(SourceRef::Image))
            .collect(),
        _ => Vec::new(),
    }
}

fn report<B: BuildBackend>(
    shared: &Shared<B>,
    stage: &PlannedStage,
    step: &str,
    status: StepStatus,
) {
    if let Some(tx) = &shared.options.progress {
        let _ = tx.send(Progress {
            stage: stage.display_name(),
            step: step.to_string(),
            status,
        });
    }
}

/// Reports a step that only changes the configuration: it starts and is done at once.
fn report_instant<B: BuildBackend>(shared: &Shared<B>, stage: &PlannedStage, step: &str) {
    report(shared, stage, step, StepStatus::Started);
    report(shared, stage, step, StepStatus::Done { elapsed_ms: 0 });
}

async fn run_step<B: BuildBackend>(
    shared: &Shared<B>,
    stage: &PlannedStage,
    deps: &HashMap<usize, Arc<StageResult<B::Rootfs>>>,
    state: &mut StageState<B::Rootfs>,
    instruction: &Instruction,
    sources: &[Option<SourceRef>],
) -> Result<(), BuildError<B::Error>> {
    if let InstructionKind::Arg { args } = &instruction.kind {
        for decl in args {
            if let Some(value) = shared.plan.args.resolve(decl) {
                state.set_arg(&decl.name, value);
            }
        }
        report_instant(shared, stage, &instruction.original);
        return Ok(());
    }
    if let Some(text) = apply_metadata(&mut state.config, &mut state.commands, &instruction.kind) {
        report_instant(shared, stage, &instruction.original);
        state.key = CacheKey::step(&state.key, instruction, &state.args, &[]);
        state.history.push(HistoryEntry {
            created_by: text,
            empty_layer: true,
        });
        return Ok(());
    }
    let started = Instant::now();
    report(shared, stage, &instruction.original, StepStatus::Started);
    let (inputs, created_by, work) = match &instruction.kind {
        InstructionKind::Run(run) => {
            let (spec, inputs) =
                run_spec(shared, stage, deps, state, instruction, run, sources).await?;
            let created_by = match &run.command {
                Command::Exec(argv) => {
                    format!("RUN {}", serde_json::to_string(argv).unwrap_or_default())
                }
                Command::Shell(_) => format!("RUN {}", spec.argv.join(" ")),
            };
            (inputs, created_by, Work::Run(spec))
        }
        InstructionKind::Copy(copy) => {
            let (spec, inputs) = copy_spec(
                shared,
                stage,
                deps,
                state,
                instruction,
                &copy.files,
                sources,
                copy.parents,
                None,
            )
            .await?;
            (
                inputs,
                format!("COPY {}", describe_files(&copy.files)),
                Work::Copy(spec),
            )
        }
        InstructionKind::Add(add) => {
            let (mut spec, inputs) = copy_spec(
                shared,
                stage,
                deps,
                state,
                instruction,
                &add.files,
                sources,
                false,
                add.checksum.clone(),
            )
            .await?;
            spec.keep_git_dir = add.keep_git_dir;
            (
                inputs,
                format!("ADD {}", describe_files(&add.files)),
                Work::Copy(spec),
            )
        }
        _ => return Ok(()),
    };
    let key = CacheKey::step(&state.key, instruction, &state.args, &inputs);
    let entry = HistoryEntry {
        created_by,
        empty_layer: false,
    };
    let backend = &shared.backend;
    if !shared.options.no_cache
        && let Some(rootfs) = backend
            .cache_get(&key)
            .await
            .map_err(backend_error(instruction))?
    {
        tracing::debug!(stage = stage.index, line = instruction.line, %key, "cache hit");
        shared.cached.fetch_add(1, Ordering::Relaxed);
        report(shared, stage, &instruction.original, StepStatus::Cached);
        state.rootfs = rootfs;
        state.key = key;
        state.history.push(entry);
        return Ok(());
    }
    let change = match &work {
        Work::Run(spec) => backend.run(&state.rootfs, spec).await,
        Work::Copy(spec) => backend.copy(&state.rootfs, spec).await,
    }
    .map_err(backend_error(instruction))?;
    let rootfs = backend
        .commit(change, &entry)
        .await
        .map_err(backend_error(instruction))?;
    backend
        .cache_put(&key, &rootfs)
        .await
        .map_err(backend_error(instruction))?;
    shared.executed.fetch_add(1, Ordering::Relaxed);
    let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    report(
        shared,
        stage,
        &instruction.original,
        StepStatus::Done { elapsed_ms },
    );
    state.rootfs = rootfs;
    state.key = key;
    state.history.push(entry);
    Ok(())
}

enum Work<R> {
    Run(RunSpec<R>),
    Copy(CopySpec<R>),
}

fn describe_files(files: &FileArgs) -> String {
    let mut parts: Vec<String> = files
        .sources
        .iter()
        .map(|s| match s {
            CopySource::Path { path } => path.clone(),
            CopySource::Heredoc(doc) => format!("<<{}", doc.name),
        })
        .collect();
    parts.push(files.dest.clone());
    parts.join(" ")
}

/// Resolves a `--from` reference to a filesystem and the digest that enters the cache key.
async fn resolve_source<B: BuildBackend>(
    shared: &Shared<B>,
    stage: &PlannedStage,
    deps: &HashMap<usize, Arc<StageResult<B::Rootfs>>>,
    state: &mut StageState<B::Rootfs>,
    instruction: &Instruction,
    source: &SourceRef,
) -> Result<(B::Rootfs, String), BuildError<B::Error>> {
    match source {
        SourceRef::Stage(i) => {
            let dep = deps
                .get(i)
                .ok_or_else(|| BuildError::Task(format!("stage {i} was not built first")))?;
            Ok((dep.rootfs.clone(), dep.key.to_string()))
        }
        SourceRef::Image(reference) => {
            if !state.images.contains_key(reference) {
                let image = shared
                    .backend
                    .resolve_image(reference, &stage.platform)
                    .await
                    .map_err(backend_error(instruction))?;
                state.images.insert(reference.clone(), image);
            }
            let image = &state.images[reference];
            Ok((image.rootfs.clone(), image.digest.clone()))
        }
    }
}

/// Selects and hashes context files off the async threads.
async fn context_digest<E: std::error::Error + 'static>(
    context: &Option<Arc<ContextIndex>>,
    instruction: &Instruction,
    sources: Vec<String>,
    excludes: Vec<String>,
) -> Result<(Vec<String>, String), BuildError<E>> {
    let Some(context) = context.clone() else {
        return Err(BuildError::NoContext {
            line: instruction.line,
            keyword: instruction.keyword().into(),
        });
    };
    let work = tokio::task::spawn_blocking(move || {
        let selected = context.select(&sources, &excludes)?;
        let digest = context.digest_of(&selected)?;
        Ok::<_, crate::context::ContextError>((
            selected.iter().map(|e| e.path.clone()).collect(),
            digest,
        ))
    });
    work.await
        .map_err(|e| BuildError::Task(e.to_string()))?
        .map_err(|source| BuildError::Context {
            line: instruction.line,
            keyword: instruction.keyword().into(),
            source,
        })
}

async fn run_spec<B: BuildBackend>(
    shared: &Shared<B>,
    stage: &PlannedStage,
    deps: &HashMap<usize, Arc<StageResult<B::Rootfs>>>,
    state: &mut StageState<B::Rootfs>,
    instruction: &Instruction,
    run: &RunInstr,
    sources: &[Option<SourceRef>],
) -> Result<(RunSpec<B::Rootfs>, Vec<String>), BuildError<B::Error>> {
    let shell = state.config.shell_or_default();
    let mut files = Vec::new();
    let argv = match &run.command {
        Command::Exec(argv) => argv.clone(),
        Command::Shell(text) => match (heredoc_name(text.trim()), run.heredocs.as_slice()) {
            // `RUN <<EOF` alone: the heredoc is the script.
            (Some(name), [doc]) if doc.name == name => {
                if doc.content.starts_with("#!") {
                    let path = format!("/dev/pipes/{}", doc.name);
                    files.push(InlineFile {
                        path: path.clone(),
                        content: doc.content.clone(),
                        mode: 0o755,
                    });
                    vec![path]
                } else {
                    shell
                        .iter()
                        .cloned()
                        .chain(std::iter::once(doc.content.clone()))
                        .collect()
                }
            }
            // Heredocs inside a longer command: the shell reads them itself.
            _ => {
                let mut script = text.clone();
                for doc in &run.heredocs {
                    script.push('\n');
                    script.push_str(&doc.content);
                    script.push_str(&doc.name);
                }
                shell
                    .iter()
                    .cloned()
                    .chain(std::iter::once(script))
                    .collect()
            }
        },
    };
    let mut env = state.config.env.clone();
    for (name, value) in &state.args {
        if state.config.env_value(name).is_none() {
            env.push(format!("{name}={value}"));
        }
    }
    for (name, value) in shared.plan.args.proxy_env() {
        if !env
            .iter()
            .any(|e| e.split_once('=').map(|(k, _)| k) == Some(name.as_str()))
        {
            env.push(format!("{name}={value}"));
        }
    }
    let mut inputs = Vec::new();
    let mut mounts = Vec::with_capacity(run.mounts.len());
    for (i, mount) in run.mounts.iter().enumerate() {
        let from = match (mount.kind, sources.get(i).cloned().flatten()) {
            (MountKind::Bind | MountKind::Cache, Some(source)) => {
                let (rootfs, digest) =
                    resolve_source(shared, stage, deps, state, instruction, &source).await?;
                if mount.kind == MountKind::Bind {
                    inputs.push(format!("mount {i} {digest}"));
                }
                Some(FileSource::Rootfs(rootfs))
            }
            (MountKind::Bind, None) => {
                let path = clean_path(
                    mount
                        .source
                        .as_deref()
                        .unwrap_or(".")
                        .trim_start_matches('/'),
                );
                let (_, digest) =
                    context_digest(&shared.context, instruction, vec![path], Vec::new()).await?;
                inputs.push(format!("mount {i} {digest}"));
                Some(FileSource::Context)
            }
            _ => None,
        };
        mounts.push(MountSpec {
            mount: mount.clone(),
            from,
        });
    }
    let workdir = state
        .config
        .working_dir
        .clone()
        .unwrap_or_else(|| "/".to_string());
    let spec = RunSpec {
        argv,
        env,
        user: state.config.user.clone(),
        workdir,
        network: run.network.unwrap_or(RunNetwork::Default),
        security: run.security.unwrap_or(RunSecurity::Sandbox),
        mounts,
        files,
        platform: stage.platform.clone(),
    };
    Ok((spec, inputs))
}

#[allow(clippy::too_many_arguments)]
async fn copy_spec<B: BuildBackend>(
    shared: &Shared<B>,
    stage: &PlannedStage,
    deps: &HashMap<usize, Arc<StageResult<B::Rootfs>>>,
    state: &mut StageState<B::Rootfs>,
    instruction: &Instruction,
    files: &FileArgs,
    sources: &[Option<SourceRef>],
    parents: bool,
    checksum: Option<String>,
) -> Result<(CopySpec<B::Rootfs>, Vec<String>), BuildError<B::Error>> {
    let is_add = matches!(instruction.kind, InstructionKind::Add(_));
    let mut inputs = Vec::new();
    let mut spec_inputs = Vec::new();
    let mut context_sources = Vec::new();
    let mut rootfs_sources = Vec::new();
    for source in &files.sources {
        match source {
            CopySource::Heredoc(doc) => spec_inputs.push(CopyInput::Heredoc {
                name: doc.name.clone(),
                content: doc.content.clone(),
            }),
            CopySource::Path { path } if is_add && is_remote(path) => {
                inputs.push(format!(
                    "url {path} {}",
                    checksum.clone().unwrap_or_default()
                ));
                spec_inputs.push(CopyInput::Url {
                    url: path.clone(),
                    checksum: checksum.clone(),
                });
            }
            CopySource::Path { path } if sources.first().cloned().flatten().is_some() => {
                rootfs_sources.push(path.clone())
            }
            CopySource::Path { path } => {
                context_sources.push(clean_path(path.trim_start_matches('/')))
            }
        }
    }
    if !rootfs_sources.is_empty()
        && let Some(Some(source)) = sources.first()
    {
        let (rootfs, digest) =
            resolve_source(shared, stage, deps, state, instruction, source).await?;
        inputs.push(format!("from {digest}"));
        spec_inputs.push(CopyInput::Rootfs {
            rootfs,
            sources: rootfs_sources,
        });
    }
    if !context_sources.is_empty() {
        let (selected, digest) = context_digest(
            &shared.context,
            instruction,
            context_sources.clone(),
            files.excludes.clone(),
        )
        .await?;
        inputs.push(format!("context {digest}"));
        spec_inputs.push(CopyInput::Context {
            sources: context_sources,
            selected,
        });
    }
    let spec = CopySpec {
        inputs: spec_inputs,
        dest: resolve_dest(state.config.working_dir.as_deref(), &files.dest),
        chown: files.chown.clone(),
        chmod: files.chmod.clone(),
        link: files.link,
        parents,
        excludes: files.excludes.clone(),
        add: is_add,
        keep_git_dir: false,
    };
    Ok((spec, inputs))
}

fn is_remote(path: &str) -> bool {
    path.starts_with("http://") || path.starts_with("https://") || path.starts_with("git@")
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
