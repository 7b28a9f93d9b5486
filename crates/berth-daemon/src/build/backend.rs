//! The daemon's side of a build: [`DaemonBackend`] implements the build library's
//! `BuildBackend` with the store (layers, the build cache) and the container service: a RUN
//! step runs in a real container, shown in `ps -a` while it runs, as docker's classic
//! builder does; COPY and ADD write into a writable layer mounted on the host.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use berth_api::models::{ContainerConfig, HostConfig};
use berth_build::cache::CacheKey;
use berth_build::exec::{
    BuildBackend, CopyInput, CopySpec, FileSource, HistoryEntry, MountSpec, ResolvedImage, RunSpec,
};
use berth_build::fsops::{self, CopyRequest, CopySource};
use berth_build::instructions::{CacheSharing, MountKind, RunMount, RunNetwork, RunSecurity};
use berth_build::plan::Platform;
use berth_store::{BuildCacheRecord, LayerInfo, Lease, Store};
use sha2::{Digest as _, Sha256};

use super::{StepDisplay, image_config};
use crate::containers::{WaitCondition, random_id};
use crate::daemon::Daemon;
use crate::error::{ServiceError, ServiceResult};
use crate::volumes::{MountKind as VolumeMountKind, MountPoint};

/// A filesystem state of a build: a chain of stored layers.
#[derive(Debug, Clone)]
pub(crate) struct BuildFs {
    /// The layers, base first.
    pub layers: Arc<Vec<LayerInfo>>,
    /// The image the chain started from (shown for step containers), or empty.
    pub base_image: String,
}

/// One build's backend.
pub(crate) struct DaemonBackend {
    pub daemon: Arc<Daemon>,
    /// The build's output.
    pub display: Arc<StepDisplay>,
    /// Keeps the layers this build made or uses until they are referenced.
    pub lease: Lease,
    /// Scratch space of this build (mount points, inline files); removed with the build.
    pub work_dir: PathBuf,
    /// The build context: extracted, or the client's directory read in place.
    pub context_dir: Option<PathBuf>,
    /// The context is the client's own directory: RUN steps may never write to it.
    pub context_read_only: bool,
    /// `SOURCE_DATE_EPOCH`: clamp file times in new layers.
    pub epoch: Option<u64>,
    /// `--pull`: pull base images even when present.
    pub pull: bool,
    /// The network RUN steps use by default.
    pub network: String,
    /// Secrets' contents by id.
    pub secrets: HashMap<String, Vec<u8>>,
    /// Credentials for pulling base images, by registry.
    pub registry_auths: Vec<berth_api::auth::AuthConfig>,
    /// Cache keys that answered a step, to mark used when the build ends.
    pub cache_hits: Mutex<Vec<String>>,
    pub(crate) counter: AtomicU64,
}

impl DaemonBackend {
    fn say(&self, text: impl Into<String>) {
        self.display.say(text.into());
    }

    fn unique_dir(&self, what: &str) -> PathBuf {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        self.work_dir.join(format!("{what}-{n}"))
    }

    /// Runs a created step container to its end, streaming its output; returns the exit code.
    async fn run_container(&self, id: &str) -> ServiceResult<i64> {
        let d = &self.daemon;
        let (_, attached) = d.attach_container(id, false, true, true).await?;
        let exited = d.wait_container(id, WaitCondition::NextExit)?;
        d.start_container(id).await?;
        let mut stream = attached
            .await
            .map_err(|_| ServiceError::internal(format!("lost the output of container {id}")))??;
        while let Some((_, bytes)) = stream.next_frame().await.map_err(ServiceError::from)? {
            self.say(String::from_utf8_lossy(&bytes).into_owned());
        }
        Ok(exited.await)
    }

    /// The mounts of a RUN step, plus read-only views of other stages it mounts (to remove
    /// afterwards) and secret environment variables.
    fn step_mounts(
        &self,
        spec: &RunSpec<BuildFs>,
        views: &mut Vec<View>,
        env: &mut Vec<String>,
    ) -> ServiceResult<Vec<MountPoint>> {
        let mut mounts = Vec::new();
        for MountSpec { mount, from } in &spec.mounts {
            let target = mount.target.clone();
            match mount.kind {
                MountKind::Bind => {
                    let target = required_target(target, "bind")?;
                    let (base, read_only) = match from {
                        Some(FileSource::Rootfs(fs)) => {
                            let view =
                                View::mount(&self.daemon.store, fs, self.unique_dir("view"))?;
                            let dir = view.dir.clone();
                            views.push(view);
                            (dir, mount.read_only)
                        }
                        _ => {
                            let dir = self.context_dir.clone().ok_or_else(|| {
                                ServiceError::invalid(
                                    "a bind mount of the context needs a build context",
                                )
                            })?;
                            (dir, mount.read_only || self.context_read_only)
                        }
                    };
                    let source = path_beneath(&base, mount.source.as_deref().unwrap_or("/"))?;
                    mounts.push(bind(source, &target, read_only));
                }
                MountKind::Cache => {
                    let target = required_target(target, "cache")?;
                    let id = cache_mount_id(mount);
                    let dir = self.cache_mount_dir(&id, mount.mode, mount.uid, mount.gid)?;
                    mounts.push(bind(dir, &target, mount.read_only));
                }
                MountKind::Secret => {
                    let id = mount
                        .id
                        .clone()
                        .or_else(|| {
                            target
                                .as_deref()
                                .and_then(|t| t.rsplit('/').next())
                                .map(str::to_string)
                        })
                        .ok_or_else(|| ServiceError::invalid("a secret mount needs an id"))?;
                    let Some(secret) = self.secrets.get(&id) else {
                        if mount.required {
                            return Err(ServiceError::invalid(format!(
                                "secret {id} is required but was not given (pass --secret id={id},src=...)"
                            )));
                        }
                        continue;
                    };
                    if let Some(var) = &mount.env {
                        env.push(format!("{var}={}", String::from_utf8_lossy(secret)));
                        if target.is_none() {
                            continue;
                        }
                    }
                    let file = self.unique_dir("secret");
                    std::fs::write(&file, secret)?;
                    set_mode(&file, mount.mode.unwrap_or(0o400), mount.uid, mount.gid)?;
                    let target = target.unwrap_or_else(|| format!("/run/secrets/{id}"));
                    mounts.push(bind(file, &target, true));
                }
                MountKind::Tmpfs => {
                    let target = required_target(target, "tmpfs")?;
                    mounts.push(MountPoint {
                        kind: VolumeMountKind::Tmpfs,
                        destination: target,
                        tmpfs_options: mount
                            .size
                            .map(|s| vec![format!("size={s}")])
                            .unwrap_or_default(),
                        ..empty_mount()
                    });
                }
                MountKind::Ssh => {
                    if mount.required {
                        return Err(ServiceError::invalid(
                            "RUN --mount=type=ssh is not supported by berth's builder",
                        ));
                    }
                }
            }
        }
        for file in &spec.files {
            let path = self.unique_dir("inline");
            std::fs::write(&path, &file.content)?;
            set_mode(&path, file.mode, None, None)?;
            mounts.push(bind(path, &file.path, true));
        }
        Ok(mounts)
    }

    /// The directory of a cache mount, kept across builds under the data root.
    fn cache_mount_dir(
        &self,
        id: &str,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
    ) -> ServiceResult<PathBuf> {
        let name = hex::encode(Sha256::digest(id.as_bytes()));
        let dir = cache_mounts_root(&self.daemon).join(name);
        if !dir.exists() {
            std::fs::create_dir_all(&dir)?;
            set_mode(&dir, mode.unwrap_or(0o755), uid, gid)?;
        }
        Ok(dir)
    }
}

/// Where cache mounts live: `<data-root>/build/cache-mounts`.
pub(crate) fn cache_mounts_root(daemon: &Daemon) -> PathBuf {
    daemon.config.data_root.join("build").join("cache-mounts")
}

/// A cache mount's identity: its `id=`, else its target (BuildKit's default).
fn cache_mount_id(mount: &RunMount) -> String {
    mount
        .id
        .clone()
        .or_else(|| mount.target.clone())
        .unwrap_or_default()
}

impl Daemon {
    /// The lock of a `sharing=locked` cache mount.
    fn cache_mount_lock(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.cache_mount_locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(id.to_string())
            .or_default()
            .clone()
    }
}

fn required_target(target: Option<String>, kind: &str) -> ServiceResult<String> {
    target.ok_or_else(|| ServiceError::invalid(format!("a {kind} mount needs a target")))
}

fn set_mode(path: &Path, mode: u32, uid: Option<u32>, gid: Option<u32>) -> ServiceResult<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    if uid.is_some() || gid.is_some() {
        std::os::unix::fs::chown(path, uid, gid)?;
    }
    Ok(())
}

/// `base/rel` after checking that resolving it does not leave `base`.
fn path_beneath(base: &Path, rel: &str) -> ServiceResult<PathBuf> {
    let joined = base.join(rel.trim_start_matches('/'));
    let resolved = joined
        .canonicalize()
        .map_err(|e| ServiceError::invalid(format!("mount source {rel}: {e}")))?;
    let base = base.canonicalize()?;
    if !resolved.starts_with(&base) {
        return Err(ServiceError::invalid(format!(
            "mount source {rel} points outside of its source"
        )));
    }
    Ok(resolved)
}

fn empty_mount() -> MountPoint {
    MountPoint {
        kind: VolumeMountKind::Bind,
        name: String::new(),
        source: String::new(),
        destination: String::new(),
        read_only: false,
        mode: String::new(),
        propagation: String::new(),
        copy_data: false,
        create_source: false,
        tmpfs_options: Vec::new(),
        named: false,
        volume_options: HashMap::new(),
        volume_labels: HashMap::new(),
    }
}

fn bind(source: PathBuf, target: &str, read_only: bool) -> MountPoint {
    MountPoint {
        source: source.display().to_string(),
        destination: target.to_string(),
        read_only,
        propagation: "rprivate".into(),
        ..empty_mount()
    }
}

/// A step's container: removed after its step, and also when the build is cancelled in
/// the middle of the step (the client went away and the build future was dropped).
struct StepContainer {
    daemon: Arc<Daemon>,
    id: String,
}

impl StepContainer {
    async fn remove(mut self) {
        let id = std::mem::take(&mut self.id);
        if let Err(e) = self.daemon.remove_container(&id, true, false).await {
            tracing::warn!(container = %id, "cannot remove build step container: {e}");
        }
    }
}

impl Drop for StepContainer {
    fn drop(&mut self) {
        if self.id.is_empty() {
            return;
        }
        let daemon = self.daemon.clone();
        let id = std::mem::take(&mut self.id);
        tokio::spawn(async move {
            if let Err(e) = daemon.remove_container(&id, true, false).await {
                tracing::warn!(container = %id, "cannot remove a cancelled build's step container: {e}");
            }
        });
    }
}

/// A build filesystem mounted on the host for reading (a stage COPY --from or RUN
/// --mount from= reads), removed on drop.
struct View {
    store: Arc<Store>,
    id: String,
    dir: PathBuf,
}

impl View {
    fn mount(store: &Arc<Store>, fs: &BuildFs, dir: PathBuf) -> ServiceResult<View> {
        let id = format!("build-view-{}", &random_id()[..16]);
        let mounts = store.prepare_container_on(&id, &fs.layers)?;
        let view = View {
            store: store.clone(),
            id,
            dir,
        };
        std::fs::create_dir_all(&view.dir)?;
        berth_store::mount_all(&mounts, &view.dir)?;
        Ok(view)
    }
}

impl Drop for View {
    fn drop(&mut self) {
        if let Err(e) = berth_store::unmount(&self.dir) {
            tracing::warn!(dir = %self.dir.display(), "cannot unmount build view: {e}");
        }
        let _ = std::fs::remove_dir(&self.dir);
        if let Err(e) = self.store.remove_container(&self.id) {
            tracing::warn!(snapshot = %self.id, "cannot remove build view: {e}");
        }
    }
}

impl BuildBackend for DaemonBackend {
    type Rootfs = BuildFs;
    type Change = BuildFs;
    type Error = ServiceError;

    async fn resolve_image(
        &self,
        reference: &str,
        platform: &Platform,
    ) -> Result<ResolvedImage<BuildFs>, ServiceError> {
        let store = self.daemon.store.clone();
        let lookup = reference.to_string();
        let local = tokio::task::spawn_blocking(move || store.resolve(&lookup)).await?;
        let image = match local {
            Ok(image) if !self.pull => image,
            _ => {
                let domain = berth_store::Reference::parse(reference)?
                    .domain()
                    .to_string();
                let auth = self
                    .registry_auths
                    .iter()
                    .find(|a| crate::registry::registry_domain(&a.serveraddress) == domain)
                    .cloned();
                self.daemon
                    .pull_image(
                        reference,
                        None,
                        Some(&platform.to_string()),
                        auth,
                        self.display.sink(),
                    )
                    .await?;
                self.daemon.store.resolve(reference)?
            }
        };
        self.lease.hold(&image.layers);
        let store = self.daemon.store.clone();
        let id = image.id.clone();
        let json = tokio::task::spawn_blocking(move || store.image_config_json(&id)).await??;
        Ok(ResolvedImage {
            rootfs: BuildFs {
                layers: Arc::new(image.layers.clone()),
                base_image: image.id.to_string(),
            },
            config: image_config::from_json(&json),
            digest: image.id.to_string(),
            history: image_config::history_from_json(&json),
        })
    }

    async fn scratch(&self) -> Result<BuildFs, ServiceError> {
        Ok(BuildFs {
            layers: Arc::new(Vec::new()),
            base_image: String::new(),
        })
    }

    async fn run(
        &self,
        parent: &BuildFs,
        spec: &RunSpec<BuildFs>,
    ) -> Result<BuildFs, ServiceError> {
        // `sharing=locked` cache mounts: one step at a time, across builds.
        let mut cache_locks = Vec::new();
        for MountSpec { mount, .. } in &spec.mounts {
            if mount.kind == MountKind::Cache && mount.sharing == Some(CacheSharing::Locked) {
                let id = cache_mount_id(mount);
                cache_locks.push(self.daemon.cache_mount_lock(&id).lock_owned().await);
            }
        }
        let mut views = Vec::new();
        let mut env = spec.env.clone();
        if !env.iter().any(|e| e.starts_with("PATH=")) {
            env.insert(0, format!("PATH={}", berth_build::exec::DEFAULT_PATH));
        }
        let mounts = self.step_mounts(spec, &mut views, &mut env)?;
        // Stubs the runtime creates to mount on are not part of the step's layer.
        let mount_points = crate::containers::mount_points_with(&mounts);
        let network = match spec.network {
            RunNetwork::Default => self.network.clone(),
            RunNetwork::None => "none".to_string(),
            RunNetwork::Host => "host".to_string(),
        };
        let config = ContainerConfig {
            cmd: Some(spec.argv.clone()),
            env: Some(env),
            user: spec.user.clone(),
            working_dir: Some(spec.workdir.clone()),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            ..Default::default()
        };
        let host_config = HostConfig {
            network_mode: Some(network),
            privileged: Some(spec.security == RunSecurity::Insecure),
            ..Default::default()
        };
        let step = StepContainer {
            daemon: self.daemon.clone(),
            id: self
                .daemon
                .create_build_container(
                    config,
                    host_config,
                    parent.base_image.clone(),
                    parent.layers.to_vec(),
                    mounts,
                )
                .await?,
        };
        let id = step.id.clone();
        self.say(format!(" ---> Running in {}\n", &id[..12]));
        let outcome = match self.run_container(&id).await {
            Ok(0) => self.commit_step(&id, parent, mount_points).await,
            Ok(code) => Err(ServiceError::invalid(format!(
                "The command '{}' returned a non-zero code: {code}",
                spec.argv.join(" ")
            ))),
            Err(e) => Err(e),
        };
        step.remove().await;
        drop(views);
        if outcome.is_ok() {
            self.say(format!(
                " ---> Removed intermediate container {}\n",
                &id[..12]
            ));
        }
        outcome
    }

    async fn copy(
        &self,
        parent: &BuildFs,
        spec: &CopySpec<BuildFs>,
    ) -> Result<BuildFs, ServiceError> {
        // ADD of URLs: fetch first, on the async side.
        let mut downloads = Vec::new();
        for input in &spec.inputs {
            if let CopyInput::Url { url, checksum } = input {
                downloads.push(download(url, checksum.as_deref()).await?);
            }
        }
        let store = self.daemon.store.clone();
        let step = format!("build-copy-{}", &random_id()[..16]);
        let dir = self.unique_dir("copy");
        let view_dirs: Vec<PathBuf> = (0..spec.inputs.len())
            .map(|_| self.unique_dir("view"))
            .collect();
        let context_dir = self.context_dir.clone();
        let spec = spec.clone();
        let parent_layers = parent.layers.clone();
        let epoch = self.epoch;
        let layer = tokio::task::spawn_blocking(move || -> ServiceResult<LayerInfo> {
            let mounts = store.prepare_container_on(&step, &parent_layers)?;
            let copied = (|| -> ServiceResult<()> {
                std::fs::create_dir_all(&dir)?;
                berth_store::mount_all(&mounts, &dir)?;
                let result = copy_into(
                    &store,
                    &dir,
                    &spec,
                    context_dir.as_deref(),
                    &view_dirs,
                    downloads,
                    epoch,
                );
                berth_store::unmount(&dir)?;
                let _ = std::fs::remove_dir(&dir);
                result
            })();
            let layer = copied.and_then(|()| {
                Ok(store.commit_container_layer(&step, &parent_layers, &[], epoch)?)
            });
            if let Err(e) = store.remove_container(&step) {
                tracing::warn!(snapshot = %step, "cannot remove copy layer: {e}");
            }
            layer
        })
        .await??;
        Ok(self.extend(parent, layer))
    }

    async fn commit(
        &self,
        change: BuildFs,
        _history: &HistoryEntry,
    ) -> Result<BuildFs, ServiceError> {
        // Steps store their layer as they finish (so a failed build keeps nothing half-made);
        // history is the image config's business.
        Ok(change)
    }

    async fn cache_get(&self, key: &CacheKey) -> Result<Option<BuildFs>, ServiceError> {
        let store = self.daemon.store.clone();
        let k = key.to_string();
        let found = tokio::task::spawn_blocking(move || store.get_build_cache(&k)).await??;
        Ok(found.map(|record| {
            self.lease.hold(&record.layers);
            self.cache_hits
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(key.to_string());
            BuildFs {
                layers: Arc::new(record.layers),
                base_image: String::new(),
            }
        }))
    }

    async fn cache_put(&self, key: &CacheKey, rootfs: &BuildFs) -> Result<(), ServiceError> {
        let now = chrono::Utc::now();
        let record = BuildCacheRecord {
            layers: rootfs.layers.to_vec(),
            created: now,
            last_used: now,
            size: rootfs.layers.last().map_or(0, |l| l.unpacked_size),
        };
        let store = self.daemon.store.clone();
        let k = key.to_string();
        tokio::task::spawn_blocking(move || store.put_build_cache(&k, &record)).await??;
        Ok(())
    }
}

impl DaemonBackend {
    /// Stores a finished step container's changes as a layer on `parent`.
    async fn commit_step(
        &self,
        id: &str,
        parent: &BuildFs,
        mount_points: Vec<String>,
    ) -> ServiceResult<BuildFs> {
        self.daemon.unmount_rootfs(id).await;
        let store = self.daemon.store.clone();
        let layers = parent.layers.clone();
        let epoch = self.epoch;
        let id = id.to_string();
        let layer = tokio::task::spawn_blocking(move || {
            store.commit_container_layer(&id, &layers, &mount_points, epoch)
        })
        .await??;
        Ok(self.extend(parent, layer))
    }

    /// `parent` plus one layer, held by the lease.
    fn extend(&self, parent: &BuildFs, layer: LayerInfo) -> BuildFs {
        let mut layers = parent.layers.to_vec();
        layers.push(layer);
        self.lease.hold(&layers);
        BuildFs {
            layers: Arc::new(layers),
            base_image: parent.base_image.clone(),
        }
    }
}

/// A downloaded ADD source: its file name and content.
struct Download {
    name: String,
    content: Vec<u8>,
}

async fn download(url: &str, checksum: Option<&str>) -> ServiceResult<Download> {
    let mut reader = crate::remote::fetch(url).await?;
    let content = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<u8>> {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut reader, &mut buf)?;
        Ok(buf)
    })
    .await??;
    if let Some(expected) = checksum {
        let actual = format!("sha256:{}", hex::encode(Sha256::digest(&content)));
        if actual != expected {
            return Err(ServiceError::invalid(format!(
                "checksum of {url} is {actual}, expected {expected}"
            )));
        }
    }
    let name = url
        .split(['?', '#'])
        .next()
        .unwrap_or(url)
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .filter(|n| !n.is_empty() && !n.contains(':'))
        .unwrap_or("download")
        .to_string();
    Ok(Download { name, content })
}

/// The paths under `base` that `sources` select once `excludes` are applied.
fn excluding(base: &Path, sources: &[String], excludes: &[String]) -> ServiceResult<Vec<String>> {
    let invalid = |e: berth_build::context::ContextError| ServiceError::invalid(e.to_string());
    let index = berth_build::context::ContextIndex::scan(
        base,
        &berth_build::context::IgnoreMatcher::default(),
    )
    .map_err(invalid)?;
    Ok(index
        .select(sources, excludes)
        .map_err(invalid)?
        .into_iter()
        .map(|e| e.path.clone())
        .collect())
}

/// Performs a COPY/ADD onto the mounted root `root` (blocking).
fn copy_into(
    store: &Arc<Store>,
    root: &Path,
    spec: &CopySpec<BuildFs>,
    context_dir: Option<&Path>,
    view_dirs: &[PathBuf],
    downloads: Vec<Download>,
    epoch: Option<u64>,
) -> ServiceResult<()> {
    let owner = spec
        .chown
        .as_deref()
        .map(|c| fsops::resolve_owner(root, c))
        .transpose()
        .map_err(|e| ServiceError::invalid(e.to_string()))?;
    let chmod = spec
        .chmod
        .as_deref()
        .map(fsops::parse_chmod)
        .transpose()
        .map_err(|e| ServiceError::invalid(e.to_string()))?;
    // Other stages and images are mounted first; with `--exclude`, what their sources
    // select is worked out the way context sources are (the same matcher).
    let mut views = Vec::new();
    let mut selections: Vec<Option<Vec<String>>> = Vec::new();
    for (input, view_dir) in spec.inputs.iter().zip(view_dirs) {
        let selection = match input {
            CopyInput::Rootfs { rootfs, sources } => {
                views.push(View::mount(store, rootfs, view_dir.clone())?);
                (!spec.excludes.is_empty())
                    .then(|| excluding(view_dir, sources, &spec.excludes))
                    .transpose()?
            }
            _ => None,
        };
        selections.push(selection);
    }
    let mut downloads = downloads.into_iter();
    let mut sources = Vec::new();
    for ((input, view_dir), selection) in spec.inputs.iter().zip(view_dirs).zip(&selections) {
        match input {
            CopyInput::Context {
                sources: patterns,
                selected,
            } => {
                let base = context_dir.ok_or_else(|| {
                    ServiceError::invalid(
                        "this step reads the build context, but the build has none",
                    )
                })?;
                sources.push(CopySource::Dir {
                    base,
                    patterns: patterns.clone(),
                    selected: Some(selected.as_slice()),
                    keep_owner: false,
                });
            }
            CopyInput::Rootfs {
                sources: patterns, ..
            } => {
                sources.push(CopySource::Dir {
                    base: view_dir,
                    patterns: patterns.clone(),
                    selected: selection.as_deref(),
                    keep_owner: true,
                });
            }
            CopyInput::Heredoc { name, content } => sources.push(CopySource::Bytes {
                name: name.clone(),
                content: content.clone().into_bytes(),
                mode: 0o644,
                mtime: None,
            }),
            CopyInput::Url { .. } => {
                let d = downloads
                    .next()
                    .ok_or_else(|| ServiceError::internal("a download went missing"))?;
                sources.push(CopySource::Bytes {
                    name: d.name,
                    content: d.content,
                    mode: 0o600,
                    mtime: None,
                });
            }
        }
    }
    let request = CopyRequest {
        root,
        dest: &spec.dest,
        sources,
        owner,
        chmod,
        parents: spec.parents,
        add: spec.add,
        epoch: epoch.map(|e| e as i64),
    };
    fsops::apply_copy(&request).map_err(|e| ServiceError::invalid(e.to_string()))?;
    drop(views);
    Ok(())
}
