//! `berth build` (docker's classic-builder client: the context as a tar in the request body,
//! the daemon's JSON message stream shown as it comes) and `berth builder prune`.

mod context;
mod display;

use std::collections::BTreeMap;
use std::io::{self, BufWriter, Read, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine;
use bytes::Bytes;
use clap::{ArgAction, Args};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::{Method, header};
use serde::Deserialize;

use self::context::{DirContext, DockerfileSource, StdinContent};
use self::display::{BuildStream, Mode, Upload};
use super::stream::{is_tty, stdout_is_tty};
use super::{Ctx, StatusError, confirm, de_null, parse_filters, print_out};
use crate::client::{self, ReqBody, query};
use crate::optparse::parse_ram;
use crate::output::human_size;
use crate::reference::Reference;

/// berth's header carrying `--secret` values: base64 of a JSON object from secret id to the
/// base64 of its content.
pub const SECRETS_HEADER: &str = "X-Berth-Build-Secrets";

/// berth's header naming the context directory for a daemon on this host to read in place:
/// `<device>:<inode>:<path>`, so a daemon that sees another file system there refuses it.
pub const CONTEXT_DIR_HEADER: &str = "X-Berth-Context-Dir";

/// The daemon's answer when it cannot read the directory in place; the CLI then sends a tar.
const CONTEXT_DIR_REFUSED: &str = "context directory is not shared with the daemon";

/// The value of [`CONTEXT_DIR_HEADER`] for `root`.
fn context_dir_header(root: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let root = root.canonicalize().ok()?;
    let meta = std::fs::metadata(&root).ok()?;
    Some(format!("{}:{}:{}", meta.dev(), meta.ino(), root.to_str()?))
}

/// `berth build`
#[derive(Args, Debug)]
#[command(override_usage = "berth build [OPTIONS] PATH | URL | -")]
pub struct BuildArgs {
    /// Set build-time variables
    #[arg(long = "build-arg", value_name = "stringArray")]
    build_arg: Vec<String>,
    /// Compress the build context using gzip
    #[arg(long)]
    compress: bool,
    /// Name of the Dockerfile (default: "PATH/Dockerfile")
    #[arg(short = 'f', long = "file", value_name = "string")]
    file: Option<String>,
    /// Always remove intermediate containers (berthd always does)
    #[arg(long = "force-rm")]
    force_rm: bool,
    /// Write the image ID to the file
    #[arg(long, value_name = "string")]
    iidfile: Option<PathBuf>,
    /// Set metadata for an image
    #[arg(long, value_name = "stringArray")]
    label: Vec<String>,
    /// Set the networking mode for the RUN instructions during build
    #[arg(long, value_name = "string")]
    network: Option<String>,
    /// Do not use cache when building the image
    #[arg(long = "no-cache")]
    no_cache: bool,
    /// Set target platform for build
    #[arg(long, value_name = "string", env = "DOCKER_DEFAULT_PLATFORM")]
    platform: Option<String>,
    /// Set type of progress output ("auto", "plain", "tty", "quiet", "rawjson")
    #[arg(
        long,
        value_name = "string",
        default_value = "auto",
        env = "BUILDKIT_PROGRESS",
        value_parser = ["auto", "plain", "tty", "quiet", "rawjson"]
    )]
    progress: String,
    /// Always attempt to pull a newer version of the image
    #[arg(long)]
    pull: bool,
    /// Suppress the build output and print image ID on success
    #[arg(short = 'q', long)]
    quiet: bool,
    /// Remove intermediate containers after a successful build (berthd always does)
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "true", action = ArgAction::Set)]
    rm: bool,
    /// Secret to expose to the build (format: "id=mysecret[,src=/local/secret]")
    #[arg(long, value_name = "stringArray")]
    secret: Vec<String>,
    /// Name and optionally a tag in the "name:tag" format
    #[arg(short = 't', long, value_name = "list", value_parser = parse_tag)]
    tag: Vec<String>,
    /// Set the target build stage to build
    #[arg(long, value_name = "string")]
    target: Option<String>,
    /// PATH | URL | -
    #[arg(value_name = "PATH | URL | -")]
    context: String,
}

/// `berth builder prune`
#[derive(Args, Debug)]
pub struct BuilderPruneArgs {
    /// Remove all unused build cache, not just dangling ones
    #[arg(short = 'a', long)]
    all: bool,
    /// Provide filter values (e.g. "until=24h")
    #[arg(long, value_name = "filter")]
    filter: Vec<String>,
    /// Do not prompt for confirmation
    #[arg(short = 'f', long)]
    force: bool,
    /// Amount of disk space to keep for cache
    #[arg(long = "keep-storage", value_name = "bytes", value_parser = parse_ram)]
    keep_storage: Option<i64>,
}

/// `-t` values must be valid references (docker's `validateTag`).
fn parse_tag(value: &str) -> Result<String, String> {
    Reference::parse(value)
        .map(|_| value.to_string())
        .map_err(|e| e.to_string())
}

/// `--build-arg` values as the JSON object docker sends: `K=V` as given, a bare `K` takes
/// `$K` from the environment, or `null` (left to the Dockerfile's default) when unset.
fn build_args_json(values: &[String], env: &dyn Fn(&str) -> Option<String>) -> String {
    let map: BTreeMap<&str, Option<String>> = values
        .iter()
        .map(|v| match v.split_once('=') {
            Some((k, val)) => (k, Some(val.to_string())),
            None => (v.as_str(), env(v)),
        })
        .collect();
    serde_json::Value::from_iter(
        map.into_iter()
            .map(|(k, v)| (k.to_string(), v.map_or(serde_json::Value::Null, Into::into))),
    )
    .to_string()
}

/// `--label` values as a JSON object (a bare `k` is an empty label).
fn labels_json(values: &[String]) -> String {
    let map: BTreeMap<&str, &str> = values
        .iter()
        .map(|v| v.split_once('=').unwrap_or((v.as_str(), "")))
        .collect();
    serde_json::to_string(&map).unwrap_or_default()
}

/// Reads one `--secret id=x[,src=file|,env=VAR][,type=file|env]` as buildx does: with
/// neither `src` nor `env`, the variable named like the id if set, else the file of that name.
fn read_secret(spec: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<(String, Vec<u8>)> {
    let (mut id, mut src, mut var, mut kind) = (None, None, None, None);
    for field in spec.split(',') {
        let Some((key, value)) = field.split_once('=') else {
            bail!("invalid field '{field}' must be a key=value pair");
        };
        match key.to_ascii_lowercase().as_str() {
            "type" if value == "file" || value == "env" => kind = Some(value.to_string()),
            "type" => bail!("unsupported secret type {value:?}"),
            "id" => id = Some(value.to_string()),
            "src" | "source" => src = Some(value.to_string()),
            "env" => var = Some(value.to_string()),
            _ => bail!("unexpected key '{key}' in '{spec}'"),
        }
    }
    let id = id
        .filter(|i| !i.is_empty())
        .ok_or_else(|| anyhow!("invalid secret {spec:?}: the id is missing"))?;
    if kind.as_deref() == Some("env") && var.is_none() {
        var = src.take();
    }
    if var.is_none() && src.is_none() {
        if env(&id).is_some() {
            var = Some(id.clone());
        } else {
            src = Some(id.clone());
        }
    }
    if let Some(var) = var {
        let value = env(&var)
            .ok_or_else(|| anyhow!("secret {id}: environment variable {var} is not set"))?;
        return Ok((id, value.into_bytes()));
    }
    let path = src.unwrap_or_default();
    let data = std::fs::read(&path).map_err(|e| anyhow!("secret {id}: reading {path}: {e}"))?;
    Ok((id, data))
}

/// The [`SECRETS_HEADER`] value for the secrets.
fn secrets_header(secrets: &[(String, Vec<u8>)]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD;
    let map: BTreeMap<&str, String> = secrets
        .iter()
        .map(|(id, data)| (id.as_str(), b64.encode(data)))
        .collect();
    b64.encode(serde_json::to_vec(&map).unwrap_or_default())
}

fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// What the request body is made from.
enum ContextBody {
    /// A directory, archived on the fly.
    Dir(DirContext),
    /// A ready archive (a lone Dockerfile wrapped in a tar).
    Archive(Vec<u8>),
    /// A tar (maybe compressed) read from stdin: what was peeked, then the rest.
    Stdin {
        head: Vec<u8>,
        rest: Box<dyn Read + Send>,
    },
}

/// The context and the Dockerfile's name in it.
struct Prepared {
    body: Option<ContextBody>,
    dockerfile: Option<String>,
    remote: Option<String>,
    compress: bool,
}

fn is_remote(context: &str) -> bool {
    context.starts_with("http://") || context.starts_with("https://")
}

/// Works out the build context as docker's `runBuild` does; `stdin` is read for `-` (as
/// the context or as `-f -`).
fn prepare(a: &BuildArgs, mut stdin: Box<dyn Read + Send>) -> Result<Prepared> {
    let dockerfile_from_stdin = a.file.as_deref() == Some("-");
    if a.context == "-" {
        if dockerfile_from_stdin {
            bail!("invalid argument: can't use stdin for both build context and dockerfile");
        }
        let head = context::read_head(&mut stdin, context::STDIN_PEEK).map_err(|e| {
            anyhow!("unable to prepare context: failed to peek context header from STDIN: {e}")
        })?;
        return Ok(match context::classify_stdin(&head) {
            kind @ (StdinContent::Tar | StdinContent::Compressed) => Prepared {
                body: Some(ContextBody::Stdin { head, rest: stdin }),
                dockerfile: a.file.clone(),
                remote: None,
                compress: a.compress && kind == StdinContent::Tar,
            },
            StdinContent::Dockerfile => {
                let mut data = head;
                stdin
                    .read_to_end(&mut data)
                    .context("unable to prepare context: reading the Dockerfile from STDIN")?;
                Prepared {
                    body: Some(ContextBody::Archive(context::single_dockerfile_tar(data)?)),
                    dockerfile: Some(context::DEFAULT_DOCKERFILE.to_string()),
                    remote: None,
                    compress: a.compress,
                }
            }
        });
    }
    if is_remote(&a.context) {
        if dockerfile_from_stdin {
            bail!(
                "unable to prepare context: a Dockerfile from STDIN needs a local or STDIN context, not a URL"
            );
        }
        return Ok(Prepared {
            body: None,
            dockerfile: a.file.clone(),
            remote: Some(a.context.clone()),
            compress: false,
        });
    }
    let mut prepare_dir = || -> Result<DirContext> {
        let root = context::context_root(&a.context)?;
        let source = if dockerfile_from_stdin {
            let mut data = Vec::new();
            stdin
                .read_to_end(&mut data)
                .context("reading the Dockerfile from STDIN")?;
            DockerfileSource::External(data)
        } else {
            context::local_dockerfile(&root, a.file.as_deref())?
        };
        DirContext::prepare(&root, source)
    };
    let dir = prepare_dir().map_err(|e| anyhow!("unable to prepare context: {e:#}"))?;
    Ok(Prepared {
        dockerfile: Some(dir.dockerfile().to_string()),
        body: Some(ContextBody::Dir(dir)),
        remote: None,
        compress: a.compress,
    })
}

/// The `POST /build` query, keys in Go's sorted order as the docker client sends them.
fn build_query(
    a: &BuildArgs,
    prepared: &Prepared,
    quiet: bool,
    env: &dyn Fn(&str) -> Option<String>,
) -> String {
    let mut q: Vec<(&str, String)> = Vec::new();
    if !a.build_arg.is_empty() {
        q.push(("buildargs", build_args_json(&a.build_arg, env)));
    }
    if let Some(d) = prepared.dockerfile.as_ref().filter(|d| !d.is_empty()) {
        q.push(("dockerfile", d.clone()));
    }
    if !a.label.is_empty() {
        q.push(("labels", labels_json(&a.label)));
    }
    if let Some(n) = &a.network {
        q.push(("networkmode", n.clone()));
    }
    if a.no_cache {
        q.push(("nocache", "1".into()));
    }
    if let Some(p) = a.platform.as_ref().filter(|p| !p.is_empty()) {
        q.push(("platform", p.clone()));
    }
    if a.pull {
        q.push(("pull", "1".into()));
    }
    if quiet {
        q.push(("q", "1".into()));
    }
    if let Some(r) = &prepared.remote {
        q.push(("remote", r.clone()));
    }
    for t in &a.tag {
        q.push(("t", t.clone()));
    }
    if let Some(t) = &a.target {
        q.push(("target", t.clone()));
    }
    q.push(("version", "1".into()));
    query(&q)
}

/// A `Write` that hands each buffer to the request body (from a plain thread).
struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<io::Result<Bytes>>,
}

impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.tx
            .blocking_send(Ok(Bytes::copy_from_slice(buf)))
            .map_err(|_| io::Error::from(io::ErrorKind::BrokenPipe))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn write_body(body: ContextBody, out: &mut dyn Write) -> Result<()> {
    match body {
        ContextBody::Dir(dir) => {
            dir.write_tar(out)?;
        }
        ContextBody::Archive(data) => out.write_all(&data)?,
        ContextBody::Stdin { head, mut rest } => {
            out.write_all(&head)?;
            io::copy(&mut rest, out).context("reading the build context from STDIN")?;
        }
    }
    Ok(())
}

fn produce(body: ContextBody, compress: bool, out: ChannelWriter) -> Result<()> {
    let mut buffered = BufWriter::with_capacity(64 * 1024, out);
    if compress {
        let mut gz = flate2::write::GzEncoder::new(&mut buffered, flate2::Compression::default());
        write_body(body, &mut gz)?;
        gz.finish()?;
    } else {
        write_body(body, &mut buffered)?;
    }
    buffered.flush()?;
    Ok(())
}

/// Where the context writer records why it stopped, so that a request cut short by it
/// reports the real cause.
type ProducerError = Arc<Mutex<Option<anyhow::Error>>>;

/// Streams the context as the request body: a thread writes the archive (gzipped with
/// `compress`) and the body counts what it sends into `upload`.
fn stream_body(body: ContextBody, compress: bool, upload: Upload) -> (ReqBody, ProducerError) {
    let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(4);
    let failure: ProducerError = Arc::default();
    let slot = failure.clone();
    std::thread::spawn(move || {
        let writer = ChannelWriter { tx: tx.clone() };
        if let Err(e) = produce(body, compress, writer) {
            let receiver_gone = e.chain().any(|c| {
                c.downcast_ref::<io::Error>()
                    .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
            }) && tx.is_closed();
            if !receiver_gone {
                let message = format!("{e:#}");
                if let Ok(mut s) = slot.lock() {
                    *s = Some(e);
                }
                let _ = tx.blocking_send(Err(io::Error::other(message)));
            }
        }
    });
    let stream = futures_util::stream::unfold((rx, upload), |(mut rx, upload)| async move {
        match rx.recv().await {
            Some(Ok(chunk)) => {
                upload.sent.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                Some((Ok(Frame::data(chunk)), (rx, upload)))
            }
            Some(Err(e)) => Some((Err(e), (rx, upload))),
            None => {
                upload.done.store(true, Ordering::Relaxed);
                None
            }
        }
    });
    (BodyExt::boxed_unsync(StreamBody::new(stream)), failure)
}

fn take_failure(slot: &Option<ProducerError>) -> Option<anyhow::Error> {
    slot.as_ref()?.lock().ok()?.take()
}

/// The size (columns, rows) of the terminal on stderr; zeros when it is not one.
fn stderr_size() -> (usize, usize) {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes a `winsize` into the pointed-to struct, which lives for the
    // duration of the call; fd 2 is only queried.
    let rc = unsafe { libc::ioctl(libc::STDERR_FILENO, libc::TIOCGWINSZ, &mut ws) };
    if rc != 0 {
        (0, 0)
    } else {
        (ws.ws_col as usize, ws.ws_row as usize)
    }
}

/// The process's terminals, as far as the build output cares.
struct Terminal {
    stdout_tty: bool,
    stderr_size: (usize, usize),
    color: bool,
}

/// `berth build`.
pub async fn build(ctx: &Ctx, a: BuildArgs) -> Result<()> {
    let stderr_tty = is_tty(io::stderr().as_fd());
    let term = Terminal {
        stdout_tty: stdout_is_tty(),
        stderr_size: stderr_size(),
        color: std::env::var_os("NO_COLOR").is_none(),
    };
    let mode = Mode::choose(&a.progress, a.quiet, term.stdout_tty, stderr_tty);
    let mut out = io::stdout();
    let mut err = io::stderr();
    run_build(
        ctx,
        a,
        mode,
        &term,
        (&mut out, &mut err),
        Box::new(io::stdin()),
        &env_var,
    )
    .await
}

/// Runs a build with the given outputs (stdout, stderr) and stdin.
async fn run_build(
    ctx: &Ctx,
    a: BuildArgs,
    mode: Mode,
    term: &Terminal,
    (out, err): (&mut dyn Write, &mut dyn Write),
    stdin: Box<dyn Read + Send>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<()> {
    if let Some(path) = &a.iidfile {
        // No stale ID may survive a failed build.
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(anyhow!("Removing image ID file: {e}"));
            }
            _ => {}
        }
    }
    let secrets = a
        .secret
        .iter()
        .map(|s| read_secret(s, env))
        .collect::<Result<Vec<_>>>()?;
    let prepared = prepare(&a, stdin)?;
    let query = build_query(&a, &prepared, mode == Mode::Quiet, env);
    let new_request = || {
        let mut request = ctx
            .client
            .request(Method::POST, &format!("/build{query}"))
            .header(header::CONTENT_TYPE, "application/x-tar");
        if !secrets.is_empty() {
            request = request.header(SECRETS_HEADER, secrets_header(&secrets));
        }
        request
    };
    let started = Instant::now();
    // A daemon on this host reads a directory context where it is: no archive to write,
    // send and unpack on every build. BERTH_BUILD_TAR=1 forces the docker-compatible tar.
    let in_place = match &prepared.body {
        Some(ContextBody::Dir(dir))
            if ctx.client.is_local() && !prepared.compress && env("BERTH_BUILD_TAR").is_none() =>
        {
            dir.in_place_root().and_then(context_dir_header)
        }
        _ => None,
    };
    let mut in_place_response = None;
    if let Some(value) = in_place {
        let request = new_request().header(CONTEXT_DIR_HEADER, value);
        match ctx.client.send(request.body(client::empty())?).await {
            Ok(r) => in_place_response = Some(r),
            Err(e) if format!("{e:#}").contains(CONTEXT_DIR_REFUSED) => {}
            Err(e) => return Err(e),
        }
    }
    let upload = Upload::default();
    let (response, producer, sent) = match in_place_response {
        Some(response) => (response, None, None),
        None => {
            let (body, producer) = match prepared.body {
                Some(body) => {
                    let (body, failure) = stream_body(body, prepared.compress, upload.clone());
                    (body, Some(failure))
                }
                None => (client::empty(), None),
            };
            let response = match ctx.client.send(new_request().body(body)?).await {
                Ok(r) => r,
                Err(e) => return Err(take_failure(&producer).unwrap_or(e)),
            };
            let sent = (prepared.remote.is_none()).then(|| upload.clone());
            (response, producer, sent)
        }
    };
    let mut stream = match mode {
        Mode::Plain => BuildStream::plain(out, term.stdout_tty, sent),
        Mode::RawJson => BuildStream::raw(out),
        Mode::Quiet => BuildStream::quiet(),
        Mode::Live => BuildStream::live(err, term.stderr_size, term.color, started, sent),
    };
    let mut body = response.into_body();
    let mut ticker = tokio::time::interval(Duration::from_millis(100));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let live = stream.is_live();
    let mut broken = None;
    loop {
        tokio::select! {
            frame = body.frame() => match frame {
                None => break,
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        stream.feed(data, Instant::now())?;
                    }
                    if stream.failed() {
                        break;
                    }
                }
                Some(Err(e)) => {
                    broken = Some(anyhow!("reading the daemon's stream: {e}"));
                    break;
                }
            },
            _ = ticker.tick(), if live => stream.tick(Instant::now())?,
        }
    }
    let outcome = stream.finish(Instant::now())?;
    if let Some(failure) = outcome.failure {
        if mode == Mode::Quiet && !outcome.held_back.is_empty() {
            err.write_all(outcome.held_back.as_bytes())?;
        }
        return Err(anyhow::Error::new(StatusError {
            code: failure.code,
            message: Some(failure.message),
        }));
    }
    if let Some(e) = take_failure(&producer).or(broken) {
        return Err(e);
    }
    let image_id = outcome.image_id.or_else(|| {
        // A daemon that sends the ID as quiet output rather than in `aux`.
        let text = outcome.held_back.trim();
        (!text.is_empty()).then(|| text.to_string())
    });
    if mode == Mode::Quiet
        && let Some(id) = &image_id
    {
        writeln!(out, "{id}")?;
        out.flush()?;
    }
    if let Some(path) = &a.iidfile {
        let Some(id) = &image_id else {
            bail!(
                "Server did not provide an image ID. Cannot write {}",
                path.display()
            );
        };
        write_iidfile(path, id)?;
    }
    Ok(())
}

fn write_iidfile(path: &Path, id: &str) -> Result<()> {
    std::fs::write(path, id).with_context(|| format!("writing {}", path.display()))
}

/// The reply of `POST /build/prune`.
#[derive(Debug, Default, Deserialize)]
struct CachePruneReply {
    #[serde(rename = "CachesDeleted", default, deserialize_with = "de_null")]
    deleted: Vec<String>,
    #[serde(rename = "SpaceReclaimed", default, deserialize_with = "de_null")]
    space: u64,
}

/// docker's `builder prune` report.
fn prune_report(reply: &CachePruneReply) -> String {
    let mut out = String::new();
    if !reply.deleted.is_empty() {
        out.push_str("Deleted build cache objects:\n");
        for id in &reply.deleted {
            out.push_str(id);
            out.push('\n');
        }
        out.push('\n');
    }
    out.push_str(&format!(
        "Total reclaimed space: {}\n",
        human_size(reply.space as f64)
    ));
    out
}

/// `berth builder prune`.
pub async fn prune(ctx: &Ctx, a: BuilderPruneArgs) -> Result<()> {
    let filters = parse_filters(&a.filter)?;
    let warning = if a.all {
        "WARNING! This will remove all build cache. Are you sure you want to continue?"
    } else {
        "WARNING! This will remove all dangling build cache. Are you sure you want to continue?"
    };
    if !a.force && !confirm(warning) {
        return Ok(());
    }
    let mut q: Vec<(&str, String)> = Vec::new();
    if a.all {
        q.push(("all", "1".into()));
    }
    if !filters.is_empty() {
        q.push(("filters", filters.to_json()));
    }
    if let Some(keep) = a.keep_storage.filter(|k| *k > 0) {
        q.push(("keep-storage", keep.to_string()));
    }
    let body = ctx
        .client
        .call_bytes(Method::POST, &format!("/build/prune{}", query(&q)))
        .await?;
    let reply: CachePruneReply =
        serde_json::from_slice(&body).context("decoding the build cache prune reply")?;
    print_out(prune_report(&reply).as_bytes())
}

#[cfg(test)]
mod tests {
    use super::super::fake_daemon::{FakeDaemon, Script, run_cli};
    use super::*;
    use clap::Parser;

    fn parse(args: &[&str]) -> BuildArgs {
        let cli = crate::Cli::try_parse_from(args).expect("command line parses");
        match cli.command {
            Some(super::super::Cmd::Build(a)) => a,
            other => panic!("not a build command: {other:?}"),
        }
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn build_args_take_bare_names_from_the_environment() {
        let env = |k: &str| (k == "FROM_ENV").then(|| "env value".to_string());
        assert_eq!(
            build_args_json(
                &[
                    "A=1".into(),
                    "FROM_ENV".into(),
                    "UNSET".into(),
                    "B=x=y".into()
                ],
                &env
            ),
            r#"{"A":"1","B":"x=y","FROM_ENV":"env value","UNSET":null}"#
        );
        assert_eq!(
            labels_json(&["a=b".into(), "empty".into()]),
            r#"{"a":"b","empty":""}"#
        );
    }

    #[test]
    fn secrets_are_read_and_encoded() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, b"s3cr3t\n").unwrap();
        let env = |k: &str| match k {
            "API_KEY" => Some("from-env".to_string()),
            "mykey" => Some("by-id".to_string()),
            _ => None,
        };
        let spec = format!("id=tok,src={}", file.display());
        assert_eq!(
            read_secret(&spec, &env).unwrap(),
            ("tok".into(), b"s3cr3t\n".to_vec())
        );
        assert_eq!(
            read_secret("id=k,env=API_KEY", &env).unwrap(),
            ("k".into(), b"from-env".to_vec())
        );
        assert_eq!(
            read_secret("type=env,id=k,src=API_KEY", &env).unwrap().1,
            b"from-env".to_vec()
        );
        assert_eq!(read_secret("id=mykey", &env).unwrap().1, b"by-id".to_vec());
        assert!(
            read_secret("id=k,env=NOPE", &env)
                .unwrap_err()
                .to_string()
                .contains("NOPE is not set")
        );
        assert!(read_secret("src=/x", &env).is_err());
        assert!(read_secret("id=a,bogus=1", &env).is_err());
        assert!(read_secret("id=a,type=ssh", &env).is_err());

        let header = secrets_header(&[
            ("tok".into(), b"s3cr3t\n".to_vec()),
            ("a".into(), vec![0, 255]),
        ]);
        let b64 = base64::engine::general_purpose::STANDARD;
        let json: serde_json::Value =
            serde_json::from_slice(&b64.decode(header.as_bytes()).unwrap()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"a": "AP8=", "tok": "czNjcjN0Cg=="})
        );
    }

    #[test]
    fn query_carries_every_option() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("Dockerfile"), "FROM busybox\n").unwrap();
        let path = dir.path().to_str().unwrap();
        let a = parse(&[
            "berth",
            "build",
            "-t",
            "x",
            "-t",
            "reg:5000/y:1",
            "--build-arg",
            "A=1",
            "--label",
            "l=v",
            "--target",
            "final",
            "--no-cache",
            "--pull",
            "--network",
            "host",
            "--platform",
            "linux/amd64",
            path,
        ]);
        let prepared = prepare(&a, Box::new(io::empty())).unwrap();
        assert_eq!(
            build_query(&a, &prepared, true, &no_env),
            "?buildargs=%7B%22A%22%3A%221%22%7D&dockerfile=Dockerfile&labels=%7B%22l%22%3A%22v%22%7D\
             &networkmode=host&nocache=1&platform=linux%2Famd64&pull=1&q=1&t=x&t=reg%3A5000%2Fy%3A1\
             &target=final&version=1"
        );
        let a = parse(&[
            "berth",
            "build",
            "-f",
            "sub/Dockerfile",
            "http://example.test/ctx.tar",
        ]);
        let prepared = prepare(&a, Box::new(io::empty())).unwrap();
        assert!(prepared.body.is_none());
        assert_eq!(
            build_query(&a, &prepared, false, &no_env),
            "?dockerfile=sub%2FDockerfile&remote=http%3A%2F%2Fexample.test%2Fctx.tar&version=1"
        );
        assert!(
            crate::Cli::try_parse_from(["berth", "build", "-t", "Bad:Tag", "."]).is_err(),
            "invalid tags are refused when parsing"
        );
    }

    #[test]
    fn stdin_contexts() {
        let a = parse(&["berth", "build", "-"]);
        let prepared = prepare(&a, Box::new(io::Cursor::new(b"FROM busybox\n".to_vec()))).unwrap();
        assert_eq!(prepared.dockerfile.as_deref(), Some("Dockerfile"));
        let Some(ContextBody::Archive(tar)) = prepared.body else {
            panic!("a lone Dockerfile is wrapped in a tar");
        };
        let mut archive = tar::Archive::new(tar.as_slice());
        let names: Vec<String> = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["Dockerfile"]);

        let a = parse(&["berth", "build", "--compress", "-f", "ci/Dockerfile", "-"]);
        let prepared = prepare(&a, Box::new(io::Cursor::new(tar.clone()))).unwrap();
        assert_eq!(prepared.dockerfile.as_deref(), Some("ci/Dockerfile"));
        assert!(prepared.compress);
        assert!(matches!(prepared.body, Some(ContextBody::Stdin { .. })));

        let a = parse(&["berth", "build", "-f", "-", "-"]);
        let err = prepare(&a, Box::new(io::empty())).err().unwrap();
        assert_eq!(
            err.to_string(),
            "invalid argument: can't use stdin for both build context and dockerfile"
        );
        let a = parse(&["berth", "build", "/nonexistent/berth-ctx"]);
        let err = prepare(&a, Box::new(io::empty())).err().unwrap();
        assert_eq!(
            err.to_string(),
            "unable to prepare context: path \"/nonexistent/berth-ctx\" not found"
        );
    }

    const STREAM: &str = r#"{"stream":"Step 1/2 : FROM busybox\n"}
{"stream":"Step 2/2 : COPY a.txt /\n"}
{"aux":{"ID":"sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"}}
{"stream":"Successfully built 0123456789ab\n"}
{"stream":"Successfully tagged x:latest\n"}
"#;

    fn tar_names(data: &[u8]) -> Vec<String> {
        tar::Archive::new(data)
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect()
    }

    #[tokio::test]
    async fn build_sends_the_context_and_shows_the_stream() {
        let script = Script::new(Vec::new(), 0);
        script.reply("POST", "/build", 200, STREAM);
        let fake = FakeDaemon::start(script.clone());
        let cfg = tempfile::tempdir().unwrap();
        let ctx = fake.ctx(cfg.path());
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("Dockerfile"),
            "FROM busybox\nCOPY a.txt /\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("a.txt"), "a").unwrap();
        std::fs::write(dir.path().join("skip.log"), "x").unwrap();
        std::fs::write(dir.path().join(".dockerignore"), "*.log\n").unwrap();
        let iid = dir.path().join("iid");
        std::fs::write(&iid, "stale").unwrap();
        let a = parse(&[
            "berth",
            "build",
            "-t",
            "x",
            "--iidfile",
            iid.to_str().unwrap(),
            dir.path().to_str().unwrap(),
        ]);
        let term = Terminal {
            stdout_tty: false,
            stderr_size: (0, 0),
            color: false,
        };
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let force_tar = |name: &str| (name == "BERTH_BUILD_TAR").then(|| "1".to_string());
        run_build(
            &ctx,
            a,
            Mode::Plain,
            &term,
            (&mut out, &mut err),
            Box::new(io::empty()),
            &force_tar,
        )
        .await
        .unwrap();
        let line = "POST /v1.44/build?dockerfile=Dockerfile&t=x&version=1";
        assert_eq!(script.requests(), vec![line]);
        let sent = script.body(line).unwrap();
        assert_eq!(
            tar_names(sent.as_bytes()),
            vec![".dockerignore", "Dockerfile", "a.txt"]
        );
        let out = String::from_utf8(out).unwrap();
        assert!(
            out.starts_with("Sending build context to Docker daemon  "),
            "{out}"
        );
        assert!(
            out.ends_with(
                "Step 1/2 : FROM busybox\nStep 2/2 : COPY a.txt /\n\
                 Successfully built 0123456789ab\nSuccessfully tagged x:latest\n"
            ),
            "{out}"
        );
        assert_eq!(
            std::fs::read_to_string(&iid).unwrap(),
            "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
        );
    }

    #[tokio::test]
    async fn a_local_daemon_reads_the_context_directory_in_place() {
        use std::os::unix::fs::MetadataExt;
        let script = Script::new(Vec::new(), 0);
        script.reply("POST", "/build", 200, STREAM);
        let fake = FakeDaemon::start(script.clone());
        let cfg = tempfile::tempdir().unwrap();
        let ctx = fake.ctx(cfg.path());
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("Dockerfile"), "FROM busybox\n").unwrap();
        let a = parse(&["berth", "build", "-q", dir.path().to_str().unwrap()]);
        let term = Terminal {
            stdout_tty: false,
            stderr_size: (0, 0),
            color: false,
        };
        let (mut out, mut err) = (Vec::new(), Vec::new());
        run_build(
            &ctx,
            a,
            Mode::Quiet,
            &term,
            (&mut out, &mut err),
            Box::new(io::empty()),
            &no_env,
        )
        .await
        .unwrap();
        let line = "POST /v1.44/build?dockerfile=Dockerfile&q=1&version=1";
        assert_eq!(script.requests(), vec![line]);
        assert_eq!(script.body(line).as_deref(), Some(""), "no archive is sent");
        let root = dir.path().canonicalize().unwrap();
        let meta = std::fs::metadata(&root).unwrap();
        let header = script.headers.lock().unwrap()[&format!("{line} X-Berth-Context-Dir")].clone();
        assert_eq!(
            header,
            format!("{}:{}:{}", meta.dev(), meta.ino(), root.display())
        );
    }

    #[tokio::test]
    async fn quiet_builds_print_the_id_and_failures_exit_with_the_message() {
        let script = Script::new(Vec::new(), 0);
        script.reply("POST", "/build", 200, STREAM);
        let fake = FakeDaemon::start(script.clone());
        let cfg = tempfile::tempdir().unwrap();
        let ctx = fake.ctx(cfg.path());
        let term = Terminal {
            stdout_tty: false,
            stderr_size: (0, 0),
            color: false,
        };
        let a = parse(&["berth", "build", "-q", "--compress", "-"]);
        let (mut out, mut err) = (Vec::new(), Vec::new());
        run_build(
            &ctx,
            a,
            Mode::Quiet,
            &term,
            (&mut out, &mut err),
            Box::new(io::Cursor::new(b"FROM busybox\n".to_vec())),
            &no_env,
        )
        .await
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n"
        );
        let line = "POST /v1.44/build?dockerfile=Dockerfile&q=1&version=1";
        assert_eq!(script.requests(), vec![line]);
        // The compressed body is a gzip of a tar holding the Dockerfile: the lossy text
        // form keeps at least the magic.
        assert!(script.body(line).unwrap().starts_with('\u{1f}'));

        let script = Script::new(Vec::new(), 0);
        script.reply(
            "POST",
            "/build",
            200,
            r#"{"stream":"Step 1/1 : FROM nosuch\n"}{"errorDetail":{"message":"pull access denied for nosuch"},"error":"pull access denied for nosuch"}"#,
        );
        let fake = FakeDaemon::start(script.clone());
        let ctx = fake.ctx(cfg.path());
        let a = parse(&["berth", "build", "-"]);
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let e = run_build(
            &ctx,
            a,
            Mode::Plain,
            &term,
            (&mut out, &mut err),
            Box::new(io::Cursor::new(b"FROM nosuch\n".to_vec())),
            &no_env,
        )
        .await
        .unwrap_err();
        let status = e.downcast_ref::<StatusError>().unwrap();
        assert_eq!(status.code, 1);
        assert_eq!(
            status.message.as_deref(),
            Some("pull access denied for nosuch")
        );
    }

    #[tokio::test]
    async fn an_unreachable_daemon_is_reported() {
        let cfg = tempfile::tempdir().unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("Dockerfile"), "FROM busybox\n").unwrap();
        let client = crate::client::Client::new(
            &format!("unix://{}", dir.path().join("none.sock").display()),
            None,
        )
        .unwrap();
        let ctx = Ctx {
            client,
            docker_config: cfg.path().to_path_buf(),
            debug: false,
        };
        let a = parse(&["berth", "build", dir.path().to_str().unwrap()]);
        let term = Terminal {
            stdout_tty: false,
            stderr_size: (0, 0),
            color: false,
        };
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let e = run_build(
            &ctx,
            a,
            Mode::Plain,
            &term,
            (&mut out, &mut err),
            Box::new(io::empty()),
            &no_env,
        )
        .await
        .unwrap_err();
        assert!(
            e.downcast_ref::<crate::client::ConnectError>().is_some(),
            "{e:#}"
        );
    }

    #[tokio::test]
    async fn builder_prune_sends_options_and_reports() {
        let script = Script::new(Vec::new(), 0);
        script.reply(
            "POST",
            "/build/prune",
            200,
            r#"{"CachesDeleted":["abc123","def456"],"SpaceReclaimed":1200000}"#,
        );
        run_cli(
            &script,
            &[
                "berth",
                "builder",
                "prune",
                "-a",
                "-f",
                "--filter",
                "until=24h",
                "--keep-storage",
                "1m",
            ],
        )
        .await
        .unwrap();
        assert_eq!(
            script.requests(),
            vec![
                "POST /v1.44/build/prune?all=1&filters=%7B%22until%22%3A%7B%2224h%22%3Atrue%7D%7D&keep-storage=1048576"
            ]
        );
        let reply = CachePruneReply {
            deleted: vec!["abc123".into(), "def456".into()],
            space: 1_200_000,
        };
        assert_eq!(
            prune_report(&reply),
            "Deleted build cache objects:\nabc123\ndef456\n\nTotal reclaimed space: 1.2MB\n"
        );
        assert_eq!(
            prune_report(&CachePruneReply::default()),
            "Total reclaimed space: 0B\n"
        );
    }
}
