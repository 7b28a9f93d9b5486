//! Executor tests against an in-memory fake backend (unit tests only).
//!
//! The fake filesystem is a map of path → content. A RUN script is a list of
//! `;`-separated commands: `write <path> <text>`, `env <NAME> <path>` (write
//! an environment variable's value), `sleep` (100 ms, tracking how many steps
//! run at once) and `fail`.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use super::*;
use crate::context::IgnoreMatcher;
use crate::exec::{FileSource, ResolvedImage};
use crate::instructions::parse_dockerfile;
use crate::plan::{BuildOptions, Platform, plan};

type Fs = BTreeMap<String, String>;

#[derive(Debug, thiserror::Error)]
#[error("fake backend: {0}")]
struct FakeError(String);

#[derive(Default)]
struct Fake {
    context_dir: Option<PathBuf>,
    images: HashMap<String, ResolvedImage<Fs>>,
    cache: Mutex<HashMap<CacheKey, Fs>>,
    runs: Mutex<Vec<RunSpec<Fs>>>,
    copies: Mutex<usize>,
    running: AtomicUsize,
    max_running: AtomicUsize,
}

impl Fake {
    fn with_images() -> Fake {
        let mut fake = Fake::default();
        let alpine = ResolvedImage {
            rootfs: Fs::from([("/etc/os-release".to_string(), "alpine".to_string())]),
            config: ImageConfig {
                env: vec![format!("PATH={}", super::super::DEFAULT_PATH)],
                cmd: Some(vec!["/bin/sh".into()]),
                ..Default::default()
            },
            digest: "sha256:alpine".into(),
            history: vec![HistoryEntry {
                created_by: "ADD rootfs".into(),
                empty_layer: false,
            }],
        };
        let mut onbuild = alpine.clone();
        onbuild.digest = "sha256:onbuild".into();
        onbuild.config.on_build = vec![
            "RUN write /triggered yes".into(),
            "ENV FROM_TRIGGER=1".into(),
            "COPY --from=alpine /etc/os-release /copied-by-trigger".into(),
        ];
        fake.images.insert("alpine".into(), alpine);
        fake.images.insert("onbuild-base".into(), onbuild);
        fake
    }

    fn runs(&self) -> Vec<RunSpec<Fs>> {
        self.runs.lock().unwrap().clone()
    }
}

fn glob_match(pattern: &str, path: &str) -> bool {
    crate::context::Glob::new(pattern.trim_start_matches('/'))
        .is_ok_and(|g| g.matches(path.trim_start_matches('/')))
}

impl BuildBackend for Fake {
    type Rootfs = Fs;
    type Change = Fs;
    type Error = FakeError;

    async fn resolve_image(
        &self,
        reference: &str,
        _platform: &Platform,
    ) -> Result<ResolvedImage<Fs>, FakeError> {
        self.images
            .get(reference)
            .cloned()
            .ok_or_else(|| FakeError(format!("no image {reference}")))
    }

    async fn scratch(&self) -> Result<Fs, FakeError> {
        Ok(Fs::new())
    }

    async fn run(&self, parent: &Fs, spec: &RunSpec<Fs>) -> Result<Fs, FakeError> {
        self.runs.lock().unwrap().push(spec.clone());
        let mut fs = parent.clone();
        let script = spec.argv.last().cloned().unwrap_or_default();
        for command in script.split(';').map(str::trim).filter(|c| !c.is_empty()) {
            let words: Vec<&str> = command.splitn(3, ' ').collect();
            match words.as_slice() {
                ["write", path, text] => {
                    fs.insert(
                        super::super::resolve_path(Some(&spec.workdir), path),
                        text.to_string(),
                    );
                }
                ["env", name, path] => {
                    let value = spec
                        .env
                        .iter()
                        .rev()
                        .find_map(|e| e.strip_prefix(&format!("{name}=")))
                        .unwrap_or("<unset>");
                    fs.insert(path.to_string(), value.to_string());
                }
                ["sleep"] => {
                    let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
                    self.max_running.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    self.running.fetch_sub(1, Ordering::SeqCst);
                }
                ["fail"] => return Err(FakeError("process exited with code 1".into())),
                other => return Err(FakeError(format!("unknown fake command {other:?}"))),
            }
        }
        Ok(fs)
    }

    async fn copy(&self, parent: &Fs, spec: &CopySpec<Fs>) -> Result<Fs, FakeError> {
        *self.copies.lock().unwrap() += 1;
        let mut fs = parent.clone();
        let into = |name: &str| {
            if spec.dest.ends_with('/') {
                format!("{}{name}", spec.dest)
            } else {
                spec.dest.clone()
            }
        };
        for input in &spec.inputs {
            match input {
                CopyInput::Context { selected, .. } => {
                    let dir = self
                        .context_dir
                        .as_ref()
                        .ok_or_else(|| FakeError("no context".into()))?;
                    for path in selected {
                        let full = dir.join(path);
                        if full.is_file() {
                            let content = std::fs::read_to_string(&full)
                                .map_err(|e| FakeError(e.to_string()))?;
                            fs.insert(into(path.rsplit('/').next().unwrap_or(path)), content);
                        }
                    }
                }
                CopyInput::Rootfs { rootfs, sources } => {
                    for (path, content) in rootfs {
                        if sources.iter().any(|s| glob_match(s, path)) {
                            fs.insert(
                                into(path.rsplit('/').next().unwrap_or(path)),
                                content.clone(),
                            );
                        }
                    }
                }
                CopyInput::Heredoc { name, content } => {
                    fs.insert(into(name), content.clone());
                }
                CopyInput::Url { url, .. } => {
                    return Err(FakeError(format!("no network for {url}")));
                }
            }
        }
        Ok(fs)
    }

    async fn commit(&self, change: Fs, _history: &HistoryEntry) -> Result<Fs, FakeError> {
        Ok(change)
    }

    async fn cache_get(&self, key: &CacheKey) -> Result<Option<Fs>, FakeError> {
        Ok(self.cache.lock().unwrap().get(key).cloned())
    }

    async fn cache_put(&self, key: &CacheKey, rootfs: &Fs) -> Result<(), FakeError> {
        self.cache
            .lock()
            .unwrap()
            .insert(key.clone(), rootfs.clone());
        Ok(())
    }
}

fn make_plan(text: &str, options: &BuildOptions) -> Arc<Plan> {
    Arc::new(plan(&parse_dockerfile(text).unwrap(), options).unwrap())
}

fn context(dir: &std::path::Path) -> Option<Arc<ContextIndex>> {
    Some(Arc::new(
        ContextIndex::scan(dir, &IgnoreMatcher::default()).unwrap(),
    ))
}

async fn build(
    fake: &Arc<Fake>,
    text: &str,
    options: &BuildOptions,
) -> Result<BuildOutput<Fs>, BuildError<FakeError>> {
    let ctx = fake.context_dir.as_deref().and_then(context);
    Executor::new(fake.clone(), ctx, ExecOptions::default())
        .build(make_plan(text, options))
        .await
}

const GO_STYLE: &str = "\
FROM alpine AS build
WORKDIR /src
RUN write out/app binary
FROM alpine AS unused
RUN fail
FROM scratch
COPY --from=build /src/out/app /app
USER 65532
ENTRYPOINT [\"/app\"]
";

#[tokio::test]
async fn multi_stage_builds_only_needed_stages_and_combines_config() {
    let fake = Arc::new(Fake::with_images());
    let out = build(&fake, GO_STYLE, &BuildOptions::default())
        .await
        .unwrap();
    assert_eq!(
        out.target.rootfs,
        Fs::from([("/app".to_string(), "binary".to_string())])
    );
    assert_eq!(out.target.config.entrypoint, Some(vec!["/app".to_string()]));
    assert_eq!(out.target.config.user.as_deref(), Some("65532"));
    assert_eq!(out.executed_steps, 2);
    assert_eq!(fake.runs().len(), 1, "the unused stage never ran");
    assert_eq!(fake.runs()[0].workdir, "/src");
    let created: Vec<&str> = out
        .target
        .history
        .iter()
        .map(|h| h.created_by.as_str())
        .collect();
    assert_eq!(
        created,
        vec![
            "COPY /src/out/app /app",
            "USER 65532",
            "ENTRYPOINT [\"/app\"]"
        ]
    );
}

#[tokio::test]
async fn rebuild_is_fully_cached_without_running_anything() {
    let fake = Arc::new(Fake::with_images());
    let first = build(&fake, GO_STYLE, &BuildOptions::default())
        .await
        .unwrap();
    let second = build(&fake, GO_STYLE, &BuildOptions::default())
        .await
        .unwrap();
    assert_eq!(second.executed_steps, 0);
    assert_eq!(second.cached_steps, 2);
    assert_eq!(fake.runs().len(), 1);
    assert_eq!(second.target.key, first.target.key);
    assert_eq!(second.target.rootfs, first.target.rootfs);
    let options = ExecOptions {
        no_cache: true,
        ..Default::default()
    };
    let third = Executor::new(fake.clone(), None, options)
        .build(make_plan(GO_STYLE, &BuildOptions::default()))
        .await
        .unwrap();
    assert_eq!(third.executed_steps, 2);
}

#[tokio::test]
async fn copy_cache_follows_the_selected_context_files() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("package.json"), "v1").unwrap();
    std::fs::write(dir.path().join("server.js"), "s1").unwrap();
    let fake = Arc::new(Fake {
        context_dir: Some(dir.path().to_path_buf()),
        ..Fake::with_images()
    });
    let text = "FROM alpine\nWORKDIR /app\nCOPY package.json ./\nRUN write deps installed\nCOPY server.js ./\n";
    let first = build(&fake, text, &BuildOptions::default()).await.unwrap();
    assert_eq!(first.executed_steps, 3);
    assert_eq!(
        first
            .target
            .rootfs
            .get("/app/package.json")
            .map(String::as_str),
        Some("v1")
    );
    std::fs::write(dir.path().join("server.js"), "s2").unwrap();
    let second = build(&fake, text, &BuildOptions::default()).await.unwrap();
    assert_eq!(
        (second.cached_steps, second.executed_steps),
        (2, 1),
        "only the server.js COPY reran"
    );
    assert_eq!(fake.runs().len(), 1);
    std::fs::write(dir.path().join("package.json"), "v2").unwrap();
    let third = build(&fake, text, &BuildOptions::default()).await.unwrap();
    assert_eq!(
        third.executed_steps, 3,
        "the dependency layer and everything after it reran"
    );
    assert_eq!(
        third
            .target
            .rootfs
            .get("/app/package.json")
            .map(String::as_str),
        Some("v2")
    );
}

#[tokio::test]
async fn independent_stages_build_concurrently() {
    let fake = Arc::new(Fake::with_images());
    let text = "\
FROM alpine AS a
RUN sleep; write /a a
FROM alpine AS b
RUN sleep; write /b b
FROM scratch
COPY --from=a /a /
COPY --from=b /b /
";
    let out = build(&fake, text, &BuildOptions::default()).await.unwrap();
    assert_eq!(fake.max_running.load(Ordering::SeqCst), 2);
    assert_eq!(out.target.rootfs.len(), 2);
}

#[tokio::test]
async fn failing_step_reports_its_line() {
    let fake = Arc::new(Fake::with_images());
    let err = build(
        &fake,
        "FROM alpine\nRUN write /ok 1\nRUN fail\n",
        &BuildOptions::default(),
    )
    .await
    .unwrap_err();
    assert!(matches!(&err, BuildError::Backend { line: 3, .. }), "{err}");
    assert!(err.to_string().contains("exited with code 1"), "{err}");
    // The step that succeeded stays cached.
    let again = build(
        &fake,
        "FROM alpine\nRUN write /ok 1\n",
        &BuildOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(again.cached_steps, 1);
    let missing = build(&fake, "FROM nosuchimage\n", &BuildOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(missing, BuildError::Backend { line: 1, .. }));
}

#[tokio::test]
async fn run_environment_has_env_args_and_proxies() {
    let fake = Arc::new(Fake::with_images());
    let mut options = BuildOptions::default();
    options.build_args.insert("V".into(), "from-cli".into());
    options
        .build_args
        .insert("http_proxy".into(), "http://proxy:3128".into());
    let text = "\
ARG V=global
FROM alpine
ARG V
ARG W=default
ENV W=env-wins
RUN env V /v; env W /w; env http_proxy /p; env PATH /path
";
    let out = build(&fake, text, &options).await.unwrap();
    let fs = &out.target.rootfs;
    assert_eq!(fs["/v"], "from-cli");
    assert_eq!(fs["/w"], "env-wins");
    assert_eq!(fs["/p"], "http://proxy:3128");
    assert_eq!(fs["/path"], super::super::DEFAULT_PATH);
    let key_with_proxy = out.target.key.clone();
    options
        .build_args
        .insert("http_proxy".into(), "http://other:3128".into());
    let again = build(&fake, text, &options).await.unwrap();
    assert_eq!(
        again.target.key, key_with_proxy,
        "proxies are not part of the key"
    );
    options.build_args.insert("V".into(), "changed".into());
    let changed = build(&fake, text, &options).await.unwrap();
    assert_ne!(
        changed.target.key, key_with_proxy,
        "build args are part of the key"
    );
}

#[tokio::test]
async fn onbuild_triggers_run_after_from_and_are_not_inherited() {
    let fake = Arc::new(Fake::with_images());
    let out = build(
        &fake,
        "FROM onbuild-base\nRUN write /after yes\n",
        &BuildOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(
        out.target.rootfs.get("/triggered").map(String::as_str),
        Some("yes")
    );
    assert_eq!(out.target.config.env_value("FROM_TRIGGER"), Some("1"));
    assert_eq!(
        out.target
            .rootfs
            .get("/copied-by-trigger")
            .map(String::as_str),
        Some("alpine")
    );
    assert!(out.target.config.on_build.is_empty());
    let out = build(
        &fake,
        "FROM alpine\nONBUILD RUN make\n",
        &BuildOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(out.target.config.on_build, vec!["RUN make"]);
}

#[tokio::test]
async fn heredocs_mounts_and_copies_reach_the_backend() {
    let fake = Arc::new(Fake::with_images());
    let text = "\
FROM alpine AS tools
RUN write /tool t
FROM alpine
RUN <<EOF
write /from-heredoc yes
EOF
RUN --mount=type=bind,from=tools,target=/t --mount=type=secret,id=tok --network=none write /x 1
COPY <<CONF /etc/app.conf
level=${LEVEL:-info}
CONF
";
    let out = build(&fake, text, &BuildOptions::default()).await.unwrap();
    assert_eq!(
        out.target.rootfs.get("/from-heredoc").map(String::as_str),
        Some("yes")
    );
    assert_eq!(
        out.target.rootfs.get("/etc/app.conf").map(String::as_str),
        Some("level=info\n")
    );
    let runs = fake.runs();
    let mounted = runs.iter().find(|r| !r.mounts.is_empty()).unwrap();
    assert_eq!(mounted.network, RunNetwork::None);
    assert!(
        matches!(&mounted.mounts[0].from, Some(FileSource::Rootfs(fs)) if fs.contains_key("/tool"))
    );
    assert_eq!(
        mounted.mounts[1].mount.secret_target().as_deref(),
        Some("/run/secrets/tok")
    );
    assert!(mounted.mounts[1].from.is_none());
}

#[tokio::test]
async fn copy_from_context_without_context_is_an_error() {
    let fake = Arc::new(Fake::with_images());
    let err = build(
        &fake,
        "FROM alpine\nCOPY a.txt /\n",
        &BuildOptions::default(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, BuildError::NoContext { line: 2, .. }),
        "{err}"
    );
}

#[tokio::test]
async fn progress_reports_cached_steps() {
    let fake = Arc::new(Fake::with_images());
    let text = "FROM alpine\nRUN write /a 1\n";
    build(&fake, text, &BuildOptions::default()).await.unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let options = ExecOptions {
        progress: Some(tx),
        ..Default::default()
    };
    Executor::new(fake.clone(), None, options)
        .build(make_plan(text, &BuildOptions::default()))
        .await
        .unwrap();
    let mut events = Vec::new();
    while let Ok(e) = rx.try_recv() {
        let status = match e.status {
            StepStatus::Started => "started",
            StepStatus::Cached => "cached",
            StepStatus::Done { .. } => "done",
        };
        events.push(format!("{}: {status}", e.step));
    }
    assert_eq!(
        events,
        [
            "FROM alpine: started",
            "FROM alpine: done",
            "RUN write /a 1: started",
            "RUN write /a 1: cached",
        ]
    );
}
