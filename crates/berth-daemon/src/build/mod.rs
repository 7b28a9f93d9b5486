//! The build service (`POST /build`, `POST /build/prune`): a context tar and a Dockerfile in,
//! an image out. Parsing, planning, cache keys and the walk over the stages are the build
//! library's; [`backend`] gives it the store and the container service.
//!
//! Output is docker's classic builder stream (`Step 2/5 : RUN ...`, the steps' own output,
//! `Successfully built <id>`, an `aux` message with the image ID), which the docker CLI,
//! docker-py and compose read.

mod backend;
mod cache;
mod image_config;

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use berth_api::progress::JsonMessage;
use berth_build::context::{ContextIndex, DigestCache, FileStamp, IgnoreMatcher};
use berth_build::exec::{ExecOptions, Executor, Progress, StepStatus};
use berth_build::instructions::parse_dockerfile;
use berth_build::plan::{BuildOptions, Platform, plan};
use tokio::sync::mpsc;

use backend::DaemonBackend;
pub use cache::PruneOptions;

use crate::daemon::Daemon;
use crate::error::{ServiceError, ServiceResult};
use crate::registry::ProgressSink;

/// What a client asks of one build (the query of `POST /build`).
#[derive(Debug, Default)]
pub struct BuildRequest {
    /// Path of the Dockerfile in the context (`Dockerfile` when empty).
    pub dockerfile: String,
    /// Names to tag the result with.
    pub tags: Vec<String>,
    /// `--build-arg` values.
    pub build_args: BTreeMap<String, String>,
    /// `--target`.
    pub target: Option<String>,
    /// `--no-cache`.
    pub no_cache: bool,
    /// `--pull`.
    pub pull: bool,
    /// `--label`s added to the image.
    pub labels: BTreeMap<String, String>,
    /// `--network` of RUN steps.
    pub network_mode: Option<String>,
    /// `--platform`.
    pub platform: Option<String>,
    /// `-q`: only the image ID and errors.
    pub quiet: bool,
    /// `--secret` contents by id.
    pub secrets: HashMap<String, Vec<u8>>,
    /// Credentials for pulling base images (`X-Registry-Config`).
    pub registry_auths: Vec<berth_api::auth::AuthConfig>,
    /// A context directory on this host, read in place instead of a tar (berth's fast path
    /// for a CLI on the same machine; the tar path stays for every other client).
    pub context_dir: Option<ContextDir>,
}

/// A context directory as the client sees it.
#[derive(Debug, Clone)]
pub struct ContextDir {
    /// Its absolute path.
    pub path: PathBuf,
    /// The device the client sees it on.
    pub device: u64,
    /// Its inode on that device.
    pub inode: u64,
}

impl ContextDir {
    /// The path, if the daemon sees the very directory the client does (not another one at
    /// the same path in another mount namespace).
    pub(crate) fn verified(&self) -> ServiceResult<PathBuf> {
        use std::os::unix::fs::MetadataExt;
        match std::fs::metadata(&self.path) {
            Ok(meta)
                if self.path.is_absolute()
                    && meta.is_dir()
                    && meta.dev() == self.device
                    && meta.ino() == self.inode =>
            {
                Ok(self.path.clone())
            }
            _ => Err(ServiceError::invalid(format!(
                "{CONTEXT_DIR_REFUSED}: {}",
                self.path.display()
            ))),
        }
    }
}

/// The refusal a client recognises to fall back to sending a context tar.
const CONTEXT_DIR_REFUSED: &str = "context directory is not shared with the daemon";

/// Content digests of context files, remembered while the daemon runs so an unchanged
/// context is not read again on every build.
#[derive(Debug, Default)]
pub struct ContextDigests(Mutex<HashMap<FileStamp, [u8; 32]>>);

/// Enough for large monorepos; past it the memory is worth more than the rehash.
const CONTEXT_DIGESTS_MAX: usize = 1 << 20;

impl DigestCache for ContextDigests {
    fn get(&self, stamp: &FileStamp) -> Option<[u8; 32]> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(stamp)
            .copied()
    }

    fn put(&self, stamp: FileStamp, digest: [u8; 32]) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= CONTEXT_DIGESTS_MAX {
            map.clear();
        }
        map.insert(stamp, digest);
    }
}

/// A build's scratch directory under the data root, removed when the build ends.
struct WorkDir(PathBuf);

impl Drop for WorkDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            tracing::warn!(dir = %self.0.display(), "cannot remove build directory: {e}");
        }
    }
}

impl Daemon {
    /// Builds an image from `context` (a tar, possibly compressed; `None` for a Dockerfile
    /// given alone is not possible over this API, so it is always a tar); streams docker's
    /// classic build output to `sink` and returns the image ID.
    pub async fn build_image(
        &self,
        req: BuildRequest,
        context: Box<dyn Read + Send>,
        sink: ProgressSink,
    ) -> ServiceResult<String> {
        let timer = self.metrics.time(crate::metrics::ImageAction::Build);
        let work = WorkDir(
            self.config
                .data_root
                .join("build")
                .join("tmp")
                .join(&crate::containers::random_id()[..16]),
        );
        let in_place = req.context_dir.is_some();
        let context_dir = match &req.context_dir {
            Some(dir) => dir.verified()?,
            None => work.0.join("context"),
        };
        let dockerfile_name = if req.dockerfile.is_empty() {
            "Dockerfile".to_string()
        } else {
            req.dockerfile.clone()
        };
        let dir = context_dir.clone();
        let name = dockerfile_name.clone();
        let (dockerfile, index) = tokio::task::spawn_blocking(move || {
            if !in_place {
                extract_context(context, &dir)?;
            }
            read_context(&dir, &name)
        })
        .await??;
        let index = index.with_digest_cache(self.context_digests.clone());

        let target_platform = match req.platform.as_deref().filter(|p| !p.is_empty()) {
            Some(p) => Platform::parse(p).map_err(ServiceError::invalid)?,
            None => Platform::host(),
        };
        let parsed = parse_dockerfile(&dockerfile)
            .map_err(|e| ServiceError::invalid(format!("{dockerfile_name}: {e}")))?;
        let epoch = req
            .build_args
            .get("SOURCE_DATE_EPOCH")
            .map(|v| {
                v.parse::<u64>().map_err(|_| {
                    ServiceError::invalid(format!(
                        "SOURCE_DATE_EPOCH must be a number of seconds: {v}"
                    ))
                })
            })
            .transpose()?;
        let options = BuildOptions {
            build_args: req.build_args.clone(),
            target: req.target.clone().filter(|t| !t.is_empty()),
            build_platform: Platform::host(),
            target_platform: target_platform.clone(),
        };
        let plan = Arc::new(
            plan(&parsed, &options)
                .map_err(|e| ServiceError::invalid(format!("{dockerfile_name}: {e}")))?,
        );
        check_context_sources(&plan, &index)?;
        let total_steps: usize = plan
            .order
            .iter()
            .map(|&i| 1 + plan.stages[i].stage.instructions.len())
            .sum();

        // A quiet build drops everything but errors and the result.
        let output = if req.quiet {
            mpsc::unbounded_channel().0
        } else {
            sink.clone()
        };
        for arg in &plan.unused_build_args {
            say(
                &output,
                format!("[Warning] One or more build-args [{arg}] were not consumed\n"),
            );
        }
        let (progress_tx, progress_rx) = mpsc::unbounded_channel();
        let display = Arc::new(StepDisplay {
            output: output.clone(),
            progress: Mutex::new(progress_rx),
            step: AtomicUsize::new(0),
            total: total_steps,
        });
        let backend = Arc::new(DaemonBackend {
            daemon: self.handle(),
            display: display.clone(),
            lease: self.store.lease(),
            work_dir: work.0.clone(),
            context_dir: Some(context_dir),
            context_read_only: in_place,
            epoch,
            pull: req.pull,
            network: match req.network_mode.as_deref() {
                None | Some("") | Some("default") => "bridge".to_string(),
                Some(mode) => mode.to_string(),
            },
            secrets: req.secrets,
            registry_auths: req.registry_auths,
            cache_hits: Mutex::new(Vec::new()),
            counter: AtomicU64::new(0),
        });
        let executor = Executor::new(
            backend.clone(),
            Some(Arc::new(index)),
            ExecOptions {
                no_cache: req.no_cache,
                progress: Some(progress_tx),
            },
        );
        // Steps show when they start even if they print nothing.
        let ticker = {
            let display = display.clone();
            AbortOnDrop(tokio::spawn(async move {
                let mut tick = tokio::time::interval(std::time::Duration::from_millis(50));
                loop {
                    tick.tick().await;
                    display.flush();
                }
            }))
        };
        let built = executor.build(plan).await;
        drop(ticker);
        display.flush();
        let built = built.map_err(|e| ServiceError::invalid(e.to_string()))?;

        let mut config = built.target.config;
        config.labels.extend(req.labels);
        let created = match epoch {
            Some(e) => chrono::DateTime::from_timestamp(e as i64, 0)
                .unwrap_or_default()
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            None => chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
        };
        let layers = built.target.rootfs.layers.to_vec();
        let blob = image_config::to_json(&image_config::BuiltImage {
            config: &config,
            history: &built.target.history,
            layers: &layers,
            platform: &target_platform,
            created,
        });
        let bytes = serde_json::to_vec(&blob).map_err(|e| ServiceError::internal(e.to_string()))?;
        let result_key = result_key(&blob);
        let all_cached = built.executed_steps == 0;
        let store = self.store.clone();
        let hits =
            std::mem::take(&mut *backend.cache_hits.lock().unwrap_or_else(|p| p.into_inner()));
        let image = tokio::task::spawn_blocking(move || {
            store.touch_build_cache(&hits)?;
            // Nothing ran: the image the same inputs gave last time is the answer, so a
            // cached rebuild keeps its ID (only its creation time would differ).
            if all_cached
                && let Some(id) = store.get_record(BUILD_RESULT_KIND, &result_key)?
                && let Ok(id) = berth_store::Digest::parse(&String::from_utf8_lossy(&id))
                && let Ok(image) = store.image(&id)
            {
                return Ok::<_, ServiceError>(image);
            }
            let image = store.create_image_from_layers(bytes, layers)?;
            store.put_record(BUILD_RESULT_KIND, &result_key, image.id.as_str().as_bytes())?;
            Ok(image)
        })
        .await??;
        drop(backend);
        let id = image.id.to_string();
        let _ = sink.send(JsonMessage {
            aux: Some(serde_json::json!({ "ID": id })),
            ..Default::default()
        });
        if req.quiet {
            // What the docker CLI prints for `build -q`.
            say(&sink, format!("{id}\n"));
        }
        say(
            &output,
            format!("Successfully built {}\n", image.id.short()),
        );
        for tag in &req.tags {
            self.tag_image(&id, tag, "").await?;
            let name = berth_store::Reference::parse(tag)?.with_default_tag();
            say(
                &output,
                format!("Successfully tagged {}\n", name.familiar_string()),
            );
        }
        drop(work);
        timer.succeeded();
        Ok(id)
    }
}

/// Records kind: build result key → the image ID a build with those results produced.
const BUILD_RESULT_KIND: &str = "build-result";

/// What identifies a build's result apart from when it was made: its config blob without
/// the creation times.
fn result_key(blob: &serde_json::Value) -> String {
    use sha2::{Digest as _, Sha256};
    let mut timeless = blob.clone();
    if let Some(object) = timeless.as_object_mut() {
        object.remove("created");
    }
    if let Some(history) = timeless["history"].as_array_mut() {
        for entry in history.iter_mut().filter_map(|e| e.as_object_mut()) {
            entry.remove("created");
        }
    }
    hex::encode(Sha256::digest(timeless.to_string().as_bytes()))
}

/// Aborts a background task when the build ends, however it ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn say(sink: &ProgressSink, text: String) {
    let _ = sink.send(JsonMessage {
        stream: Some(text),
        ..Default::default()
    });
}

/// The classic builder's output: the executor's progress drawn as `Step i/n : ...` lines,
/// in order with what the steps print. The executor reports a step before the backend runs
/// it, so flushing its pending reports before each line of step output keeps the order.
pub(crate) struct StepDisplay {
    output: ProgressSink,
    progress: Mutex<mpsc::UnboundedReceiver<Progress>>,
    step: AtomicUsize,
    total: usize,
}

impl StepDisplay {
    /// Draws the progress reports received so far.
    pub(crate) fn flush(&self) {
        let mut progress = self.progress.lock().unwrap_or_else(|p| p.into_inner());
        while let Ok(event) = progress.try_recv() {
            match event.status {
                StepStatus::Started => {
                    let step = self.step.fetch_add(1, Ordering::Relaxed) + 1;
                    say(
                        &self.output,
                        format!("Step {step}/{} : {}\n", self.total, event.step),
                    );
                }
                StepStatus::Cached => say(&self.output, " ---> Using cache\n".to_string()),
                StepStatus::Done { .. } => {}
            }
        }
    }

    /// Writes a line of step output, after the reports before it.
    pub(crate) fn say(&self, text: String) {
        self.flush();
        say(&self.output, text);
    }

    /// Where messages of other kinds (pull progress) go, once reports are flushed.
    pub(crate) fn sink(&self) -> ProgressSink {
        self.flush();
        self.output.clone()
    }
}

/// Fails before anything runs when a COPY or ADD names context files that are not there
/// (sources with variables are checked when their step expands them).
fn check_context_sources(
    plan: &berth_build::plan::Plan,
    index: &ContextIndex,
) -> ServiceResult<()> {
    use berth_build::instructions::{CopySource, InstructionKind};
    for &stage in &plan.order {
        for instruction in &plan.stages[stage].stage.instructions {
            let files = match &instruction.kind {
                InstructionKind::Copy(copy) if copy.from.is_none() => &copy.files,
                InstructionKind::Add(add) => &add.files,
                _ => continue,
            };
            let paths: Vec<String> = files
                .sources
                .iter()
                .filter_map(|s| match s {
                    CopySource::Path { path, .. } => Some(path.clone()),
                    _ => None,
                })
                .filter(|p| !p.contains('$') && !p.contains("://") && !p.starts_with("git@"))
                .collect();
            if let Err(e) = index.select(&paths, &[]) {
                return Err(ServiceError::invalid(format!(
                    "dockerfile line {}: {}: {e}",
                    instruction.line,
                    instruction.keyword()
                )));
            }
        }
    }
    Ok(())
}

/// Unpacks the context tar (plain or compressed) into `dir`. Entries cannot land outside
/// `dir`; ownership is not kept (COPY gives files to root unless told otherwise).
fn extract_context(context: Box<dyn Read + Send>, dir: &Path) -> ServiceResult<()> {
    std::fs::create_dir_all(dir)?;
    let (_, reader) = berth_store::layer::decompress(context)?;
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(true);
    archive.set_preserve_mtime(true);
    archive.set_overwrite(true);
    // Clients' context tars carry file capabilities (docker's writer sends them), which
    // COPY must keep; like moby's untar of a context, an attribute that cannot be set fails
    // the build rather than vanishing from the image.
    archive.set_unpack_xattrs(true);
    archive
        .unpack(dir)
        .map_err(|e| ServiceError::invalid(format!("cannot read the build context: {e}")))
}

/// The Dockerfile's text and the context's file index (honouring `.dockerignore`).
fn read_context(dir: &Path, dockerfile: &str) -> ServiceResult<(String, ContextIndex)> {
    let cleaned = berth_build::context::clean_path(dockerfile.trim_start_matches('/'));
    let missing =
        || ServiceError::invalid(format!("Cannot locate specified Dockerfile: {dockerfile}"));
    if cleaned == ".." || cleaned.starts_with("../") {
        return Err(missing());
    }
    let path = dir.join(&cleaned);
    // The Dockerfile must be a file of the context, not a link out of it.
    let meta = std::fs::symlink_metadata(&path).map_err(|_| missing())?;
    if !meta.is_file() {
        return Err(missing());
    }
    let text = std::fs::read_to_string(&path)
        .map_err(|e| ServiceError::invalid(format!("cannot read {dockerfile}: {e}")))?;
    let ignore = match std::fs::read_to_string(dir.join(".dockerignore")) {
        Ok(text) => IgnoreMatcher::from_dockerignore(&text)
            .map_err(|e| ServiceError::invalid(format!(".dockerignore: {e}")))?,
        Err(_) => IgnoreMatcher::default(),
    };
    let index = ContextIndex::scan(dir, &ignore)
        .map_err(|e| ServiceError::invalid(format!("cannot read the build context: {e}")))?;
    Ok((text, index))
}
