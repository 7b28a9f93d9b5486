//! `run`, `create`, `start` and `attach`: the container life-cycle commands that may attach
//! to the container's streams. Request order copies the docker CLI: create (→ 404 → pull →
//! create) → attach → wait → start → resize.

use anyhow::{Context, Result, anyhow, bail};
use berth_api::models::{ContainerCreateBody, ContainerCreateResponse, ContainerWaitResponse};
use clap::{ArgAction, Args};
use hyper::body::Incoming;
use hyper::{Method, Response};
use serde::Deserialize;

use super::stream::{self, RawMode, Streams};
use super::{Ctx, StatusError, docker_config_string, exit_code, print_out};
use crate::client::{self, Client, enc_path, query};
use crate::opts::{self, ContainerOpts};
use crate::reference::Reference;

/// `berth run`
#[derive(Args, Debug)]
#[command(
    disable_help_flag = true,
    override_usage = "berth run [OPTIONS] IMAGE [COMMAND] [ARG...]"
)]
pub struct RunArgs {
    #[command(flatten)]
    opts: ContainerOpts,
    /// IMAGE [COMMAND] [ARG...]
    #[arg(value_name = "IMAGE", required = true, trailing_var_arg = true)]
    args: Vec<String>,
}

/// `berth create`
#[derive(Args, Debug)]
#[command(
    disable_help_flag = true,
    override_usage = "berth create [OPTIONS] IMAGE [COMMAND] [ARG...]"
)]
pub struct CreateArgs {
    #[command(flatten)]
    opts: ContainerOpts,
    /// IMAGE [COMMAND] [ARG...]
    #[arg(value_name = "IMAGE", required = true, trailing_var_arg = true)]
    args: Vec<String>,
}

/// `berth start`
#[derive(Args, Debug)]
pub struct StartArgs {
    /// Attach STDOUT/STDERR and forward signals
    #[arg(short = 'a', long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", action = ArgAction::Set)]
    attach: bool,
    /// Override the key sequence for detaching a container
    #[arg(long = "detach-keys", value_name = "string")]
    detach_keys: Option<String>,
    /// Attach container's STDIN
    #[arg(short = 'i', long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", action = ArgAction::Set)]
    interactive: bool,
    /// CONTAINER [CONTAINER...]
    #[arg(value_name = "CONTAINER", required = true)]
    containers: Vec<String>,
}

/// `berth attach`
#[derive(Args, Debug)]
pub struct AttachArgs {
    /// Override the key sequence for detaching a container
    #[arg(long = "detach-keys", value_name = "string")]
    detach_keys: Option<String>,
    /// Do not attach STDIN
    #[arg(long = "no-stdin")]
    no_stdin: bool,
    /// Proxy all received signals to the process
    #[arg(long = "sig-proxy", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "true", action = ArgAction::Set)]
    sig_proxy: bool,
    /// CONTAINER
    #[arg(value_name = "CONTAINER")]
    container: String,
}

/// docker's `withHelp`: `berth: <err>\n\nRun 'berth <cmd> --help' for more information`.
fn with_help(err: &anyhow::Error, cmd: &str, code: i32) -> anyhow::Error {
    anyhow::Error::new(StatusError {
        code,
        message: Some(format!(
            "berth: {err:#}\n\nRun 'berth {cmd} --help' for more information"
        )),
    })
}

/// docker's `toStatusError`: 127 when the command was not found, 126 when it could not be
/// executed, 125 for every other failure.
fn to_status_error(err: anyhow::Error, cmd: &str) -> anyhow::Error {
    if err.downcast_ref::<StatusError>().is_some() {
        return err;
    }
    let msg = format!("{err:#}");
    let code = if msg.contains("executable file not found")
        || msg.contains("no such file or directory")
        || msg.contains("system cannot find the file specified")
    {
        127
    } else if msg.contains("permission denied") || msg.contains("is a directory") {
        126
    } else {
        125
    };
    with_help(&err, cmd, code)
}

/// Pulls an image, printing progress to stderr (unless quiet); used by run and create.
async fn pull_for_create(
    ctx: &Ctx,
    r: &Reference,
    platform: Option<&str>,
    quiet: bool,
) -> Result<()> {
    let mut q = vec![("fromImage", r.name()), ("tag", r.api_tag())];
    if let Some(p) = platform {
        q.push(("platform", p.to_string()));
    }
    let auth = super::registry::encoded_auth(ctx, &r.auth_key());
    let req = ctx
        .client
        .request(Method::POST, &format!("/images/create{}", query(&q)))
        .header("X-Registry-Auth", auth)
        .body(client::empty())?;
    let resp = ctx.client.send(req).await?;
    let mut sink = std::io::sink();
    let mut stderr = std::io::stderr();
    let (out, terminal): (&mut dyn std::io::Write, bool) = if quiet {
        (&mut sink, false)
    } else {
        (
            &mut stderr,
            stream::is_tty(std::os::fd::AsFd::as_fd(&std::io::stderr())),
        )
    };
    super::progress::display_response(resp, out, terminal, |_| {}).await
}

/// Creates the container (pulling the image on 404 when `--pull missing`), prints daemon
/// warnings and writes `--cidfile`; returns the container ID.
async fn create_container(
    ctx: &Ctx,
    body: &ContainerCreateBody,
    o: &ContainerOpts,
) -> Result<String> {
    let image = body.image.clone().unwrap_or_default();
    let cidfile = o.cidfile.as_deref().filter(|p| !p.is_empty());
    if let Some(path) = cidfile
        && std::path::Path::new(path).exists()
    {
        bail!(
            "container ID file found, make sure the other container isn't running or delete {path}"
        );
    }
    let is_id = image.len() == 64 && image.bytes().all(|b| b.is_ascii_hexdigit());
    let named = if is_id {
        None
    } else {
        Some(Reference::parse(&image)?.with_default_tag())
    };
    if o.pull == "always"
        && let Some(r) = &named
    {
        pull_for_create(ctx, r, o.platform.as_deref(), o.quiet).await?;
    }
    let mut q = Vec::new();
    if let Some(n) = &o.name {
        q.push(("name", n.clone()));
    }
    if let Some(p) = &o.platform {
        q.push(("platform", p.clone()));
    }
    let path = format!("/containers/create{}", query(&q));
    let reply = match ctx.client.post_json(&path, body).await {
        Ok(r) => r,
        Err(e) if client::is_not_found(&e) && o.pull == "missing" && named.is_some() => {
            let r = named.as_ref().ok_or(e)?;
            if !o.quiet {
                eprintln!("Unable to find image '{}' locally", r.familiar_string());
            }
            pull_for_create(ctx, r, o.platform.as_deref(), o.quiet).await?;
            ctx.client.post_json(&path, body).await?
        }
        Err(e) => return Err(e),
    };
    let created: ContainerCreateResponse =
        serde_json::from_slice(&reply).context("decoding the create reply")?;
    for w in &created.warnings {
        eprintln!("WARNING: {w}");
    }
    if let Some(path) = cidfile {
        std::fs::write(path, &created.id)
            .with_context(|| format!("failed to write the container ID to the file {path}"))?;
    }
    Ok(created.id)
}

/// Sends `wait?condition=…` and returns once the response headers arrived (the daemon sends
/// them before the container exits, so `start` can follow).
async fn begin_wait(client: &Client, id: &str, auto_remove: bool) -> Result<Response<Incoming>> {
    let cond = if auto_remove { "removed" } else { "next-exit" };
    client
        .call(
            Method::POST,
            &format!("/containers/{id}/wait?condition={cond}"),
        )
        .await
}

/// The end of an attached `run` or `start -a`: follow the terminal size, pump the streams
/// until the container ends (or the user detaches), restore the terminal, and exit with the
/// container's status.
async fn follow_to_exit(
    ctx: &Ctx,
    id: &str,
    conn: crate::client::Hijacked,
    streams: Streams,
    escape: Option<stream::EscapeProxy>,
    raw: Option<RawMode>,
    wait: Result<Response<Incoming>>,
) -> Result<()> {
    if streams.tty && stream::stdout_is_tty() {
        stream::monitor_tty_size(ctx.client.clone(), format!("/containers/{id}"));
    }
    let pumped = stream::pump(conn, streams, escape).await;
    if let Some(mut r) = raw {
        r.restore();
    }
    if pumped? == stream::Ended::Detached {
        return Ok(());
    }
    let status = finish_wait(wait).await;
    if status != 0 {
        return Err(exit_code(status));
    }
    Ok(())
}

/// Reads the wait body: the exit status, or 125 with docker's message on failure.
async fn finish_wait(resp: Result<Response<Incoming>>) -> i32 {
    let body = match resp {
        Ok(r) => client::read_body(r).await,
        Err(e) => Err(e),
    };
    let parsed = body.and_then(|b| {
        serde_json::from_slice::<ContainerWaitResponse>(&b)
            .map_err(|e| anyhow!("decoding wait reply: {e}"))
    });
    match parsed {
        Ok(w) => {
            if let Some(msg) = w.error.and_then(|e| e.message).filter(|m| !m.is_empty()) {
                eprintln!("Error waiting for container: {msg}");
                return 125;
            }
            w.status_code as i32
        }
        Err(e) => {
            eprintln!("Error waiting for container: {e:#}");
            125
        }
    }
}

fn attach_query(stdin: bool, stdout: bool, stderr: bool, detach_keys: Option<&str>) -> String {
    let mut q = vec![("stream", "1".to_string())];
    if stdin {
        q.push(("stdin", "1".into()));
    }
    if stdout {
        q.push(("stdout", "1".into()));
    }
    if stderr {
        q.push(("stderr", "1".into()));
    }
    if let Some(k) = detach_keys {
        q.push(("detachKeys", k.to_string()));
    }
    query(&q)
}

/// `berth run`.
pub async fn run(ctx: &Ctx, a: RunArgs) -> Result<()> {
    let o = &a.opts;
    let (image, cmd) = (a.args[0].clone(), a.args[1..].to_vec());
    if o.detach && !o.attach.is_empty() {
        bail!("conflicting options: cannot specify both --attach and --detach");
    }
    let mut body = opts::build(o, &image, &cmd, stream::stdout_size())
        .map_err(|e| with_help(&e, "run", 125))?;
    let attach_stdin = body.attach_stdin.unwrap_or(false);
    if !o.detach && o.tty && attach_stdin && !stream::stdin_is_tty() {
        bail!("the input device is not a TTY");
    }
    if o.detach {
        body.attach_stdin = Some(false);
        body.attach_stdout = Some(false);
        body.attach_stderr = Some(false);
        body.stdin_once = Some(false);
    }
    let streams = Streams {
        stdin: body.attach_stdin.unwrap_or(false),
        stdout: body.attach_stdout.unwrap_or(false),
        stderr: body.attach_stderr.unwrap_or(false),
        tty: o.tty,
    };
    let id = create_container(ctx, &body, o)
        .await
        .map_err(|e| to_status_error(e, "run"))?;
    let attach = streams.stdin || streams.stdout || streams.stderr;
    if o.sig_proxy && attach {
        stream::proxy_signals(ctx.client.clone(), id.clone());
    }
    let mut raw = None;
    let keys = o
        .detach_keys
        .clone()
        .or_else(|| docker_config_string(ctx, "detachKeys"));
    let escape = stream::escape_for(streams, keys.as_deref())?;
    let attach_path = format!(
        "/containers/{id}/attach{}",
        attach_query(
            streams.stdin,
            streams.stdout,
            streams.stderr,
            keys.as_deref(),
        )
    );
    // Both must be in place before the start; neither depends on the other, so they
    // share the round trip.
    let (conn, wait) = tokio::join!(
        async {
            match attach {
                true => ctx
                    .client
                    .hijack(Method::POST, &attach_path, None)
                    .await
                    .map(Some),
                false => Ok(None),
            }
        },
        begin_wait(&ctx.client, &id, o.rm)
    );
    let conn = conn?;
    if conn.is_some() && streams.tty && streams.stdin {
        raw = Some(RawMode::enable()?);
    }
    if let Err(e) = ctx
        .client
        .call(Method::POST, &format!("/containers/{id}/start"))
        .await
    {
        drop(conn);
        if let Some(mut r) = raw {
            r.restore();
        }
        if o.rm {
            finish_wait(wait).await;
        }
        return Err(to_status_error(e, "run"));
    }
    let Some(conn) = conn else {
        print_out(format!("{id}\n").as_bytes())?;
        return Ok(());
    };
    follow_to_exit(ctx, &id, conn, streams, escape, raw, wait).await
}

/// `berth create`.
pub async fn create(ctx: &Ctx, a: CreateArgs) -> Result<()> {
    let o = &a.opts;
    let (image, cmd) = (a.args[0].clone(), a.args[1..].to_vec());
    let body = opts::build(o, &image, &cmd, stream::stdout_size())
        .map_err(|e| with_help(&e, "create", 125))?;
    let id = create_container(ctx, &body, o)
        .await
        .map_err(|e| to_status_error(e, "create"))?;
    print_out(format!("{id}\n").as_bytes())
}

/// The parts of container inspect that start/attach need.
#[derive(Debug, Default, Deserialize)]
struct AttachInfo {
    #[serde(rename = "Id", default)]
    id: String,
    #[serde(rename = "Config", default)]
    config: AttachConfig,
    #[serde(rename = "HostConfig", default)]
    host_config: AttachHostConfig,
    #[serde(rename = "State", default)]
    state: AttachState,
}

#[derive(Debug, Default, Deserialize)]
struct AttachConfig {
    #[serde(rename = "Tty", default)]
    tty: bool,
    #[serde(rename = "OpenStdin", default)]
    open_stdin: bool,
}

#[derive(Debug, Default, Deserialize)]
struct AttachHostConfig {
    #[serde(rename = "AutoRemove", default)]
    auto_remove: bool,
}

#[derive(Debug, Default, Deserialize)]
struct AttachState {
    #[serde(rename = "Running", default)]
    running: bool,
    #[serde(rename = "Paused", default)]
    paused: bool,
    #[serde(rename = "Restarting", default)]
    restarting: bool,
}

async fn inspect_for_attach(client: &Client, name: &str) -> Result<AttachInfo> {
    client
        .get_json(&format!("/containers/{}/json", enc_path(name)))
        .await
}

/// `berth start`.
pub async fn start(ctx: &Ctx, a: StartArgs) -> Result<()> {
    if !(a.attach || a.interactive) {
        let mut failed = Vec::new();
        for c in &a.containers {
            match ctx
                .client
                .call(Method::POST, &format!("/containers/{}/start", enc_path(c)))
                .await
            {
                Ok(_) => print_out(format!("{c}\n").as_bytes())?,
                Err(e) => {
                    eprintln!("{e:#}");
                    failed.push(c.clone());
                }
            }
        }
        if !failed.is_empty() {
            bail!("Error: failed to start containers: {}", failed.join(", "));
        }
        return Ok(());
    }
    if a.containers.len() > 1 {
        bail!("you cannot start and attach multiple containers at once");
    }
    let info = inspect_for_attach(&ctx.client, &a.containers[0]).await?;
    let id = info.id.clone();
    if !info.config.tty {
        stream::proxy_signals(ctx.client.clone(), id.clone());
    }
    let streams = Streams {
        stdin: a.interactive && info.config.open_stdin,
        stdout: true,
        stderr: true,
        tty: info.config.tty,
    };
    let keys = a
        .detach_keys
        .clone()
        .or_else(|| docker_config_string(ctx, "detachKeys"));
    let escape = stream::escape_for(streams, keys.as_deref())?;
    let q = attach_query(streams.stdin, true, true, keys.as_deref());
    let conn = ctx
        .client
        .hijack(Method::POST, &format!("/containers/{id}/attach{q}"), None)
        .await?;
    let mut raw = if streams.tty && streams.stdin {
        Some(RawMode::enable()?)
    } else {
        None
    };
    let wait = begin_wait(&ctx.client, &id, info.host_config.auto_remove).await;
    if let Err(e) = ctx
        .client
        .call(Method::POST, &format!("/containers/{id}/start"))
        .await
    {
        drop(conn);
        if let Some(r) = raw.as_mut() {
            r.restore();
        }
        if info.host_config.auto_remove {
            finish_wait(wait).await;
        }
        return Err(e);
    }
    follow_to_exit(ctx, &id, conn, streams, escape, raw, wait).await
}

/// `berth attach`: streams a running container's output (and stdin) until it exits; the
/// exit code is the container's.
pub async fn attach(ctx: &Ctx, a: AttachArgs) -> Result<()> {
    let info = inspect_for_attach(&ctx.client, &a.container).await?;
    if !info.state.running {
        bail!("You cannot attach to a stopped container, start it first");
    }
    if info.state.paused {
        bail!("You cannot attach to a paused container, unpause it first");
    }
    if info.state.restarting {
        bail!("You cannot attach to a restarting container, wait until it is running");
    }
    let streams = Streams {
        stdin: !a.no_stdin && info.config.open_stdin,
        stdout: true,
        stderr: true,
        tty: info.config.tty,
    };
    if streams.stdin && streams.tty && !stream::stdin_is_tty() {
        bail!("the input device is not a TTY");
    }
    let id = info.id.clone();
    if a.sig_proxy && !info.config.tty {
        stream::proxy_signals(ctx.client.clone(), id.clone());
    }
    let keys = a
        .detach_keys
        .clone()
        .or_else(|| docker_config_string(ctx, "detachKeys"));
    let escape = stream::escape_for(streams, keys.as_deref())?;
    let q = attach_query(streams.stdin, true, true, keys.as_deref());
    let conn = ctx
        .client
        .hijack(Method::POST, &format!("/containers/{id}/attach{q}"), None)
        .await?;
    let mut raw = if streams.tty && streams.stdin {
        Some(RawMode::enable()?)
    } else {
        None
    };
    if streams.tty && stream::stdout_is_tty() {
        stream::monitor_tty_size(ctx.client.clone(), format!("/containers/{id}"));
    }
    // The exit code comes from a plain wait, registered while the container still runs.
    let wait = ctx
        .client
        .call(Method::POST, &format!("/containers/{id}/wait"))
        .await;
    let pumped = stream::pump(conn, streams, escape).await;
    if let Some(r) = raw.as_mut() {
        r.restore();
    }
    if pumped? == stream::Ended::Detached {
        // docker attach reports the detach as its stream's error (exit status 1); docker
        // run does not.
        bail!("read escape sequence");
    }
    let status = finish_wait(wait).await;
    if status != 0 {
        return Err(exit_code(status));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_errors_map_to_docker_codes() {
        let code = |msg: &str| {
            let e = to_status_error(anyhow!("Error response from daemon: {msg}"), "run");
            e.downcast_ref::<StatusError>().unwrap().code
        };
        assert_eq!(
            code("exec: \"nope\": executable file not found in $PATH"),
            127
        );
        assert_eq!(code("exec /bin/x: no such file or directory"), 127);
        assert_eq!(code("exec /etc: permission denied"), 126);
        assert_eq!(code("something else"), 125);
        let e = to_status_error(anyhow!("boom"), "run");
        assert_eq!(
            e.downcast_ref::<StatusError>().unwrap().message.as_deref(),
            Some("berth: boom\n\nRun 'berth run --help' for more information")
        );
    }

    use super::super::fake_daemon::{FakeDaemon, Script};
    use clap::Parser;

    async fn run_cli(ctx: &Ctx, args: &[&str]) -> Result<()> {
        let mut argv = vec!["berth"];
        argv.extend_from_slice(args);
        let cli = crate::Cli::try_parse_from(argv).unwrap();
        super::super::dispatch(ctx, cli.command.unwrap()).await
    }

    fn code_of(r: Result<()>) -> i32 {
        match r {
            Ok(()) => 0,
            Err(e) => e.downcast_ref::<StatusError>().map(|s| s.code).unwrap_or(1),
        }
    }

    #[tokio::test]
    async fn attached_run_follows_docker_sequence_and_exit_code() {
        let frame =
            berth_api::stdcopy::encode(berth_api::stdcopy::StdStream::Stderr, b"attached output\n");
        let script = Script::new(frame, 3);
        let fake = FakeDaemon::start(script.clone());
        let cfg = tempfile::tempdir().unwrap();
        let ctx = fake.ctx(cfg.path());
        let r = run_cli(&ctx, &["run", "--rm", "busybox", "echo", "hi"]).await;
        assert_eq!(code_of(r), 3);
        assert_eq!(
            script.requests(),
            vec![
                "POST /v1.44/containers/create",
                "POST /v1.44/containers/abc123/attach?stream=1&stdout=1&stderr=1",
                "POST /v1.44/containers/abc123/wait?condition=removed",
                "POST /v1.44/containers/abc123/start",
            ]
        );
    }

    #[tokio::test]
    async fn detached_run_still_waits_before_start() {
        let script = Script::new(Vec::new(), 0);
        let fake = FakeDaemon::start(script.clone());
        let cfg = tempfile::tempdir().unwrap();
        let ctx = fake.ctx(cfg.path());
        assert_eq!(
            code_of(
                run_cli(
                    &ctx,
                    &["run", "-d", "--name", "web", "busybox", "sleep", "1"]
                )
                .await
            ),
            0
        );
        assert_eq!(
            script.requests(),
            vec![
                "POST /v1.44/containers/create?name=web",
                "POST /v1.44/containers/abc123/wait?condition=next-exit",
                "POST /v1.44/containers/abc123/start",
            ]
        );
    }

    #[tokio::test]
    async fn missing_image_is_pulled_then_created_again() {
        let script = Script::new(Vec::new(), 0);
        *script.create_404_once.lock().unwrap() = true;
        let fake = FakeDaemon::start(script.clone());
        let cfg = tempfile::tempdir().unwrap();
        let ctx = fake.ctx(cfg.path());
        assert_eq!(
            code_of(run_cli(&ctx, &["create", "-q", "busybox"]).await),
            0
        );
        let reqs = script.requests();
        let pull = "POST /v1.44/images/create?fromImage=docker.io%2Flibrary%2Fbusybox&tag=latest";
        assert_eq!(
            reqs,
            vec![
                "POST /v1.44/containers/create",
                pull,
                "POST /v1.44/containers/create"
            ]
        );
        assert_eq!(
            script.headers.lock().unwrap().get(pull).map(String::as_str),
            Some("e30=")
        );
    }

    #[tokio::test]
    async fn pump_splits_stdcopy_frames_and_passes_tty_bytes() {
        use berth_api::stdcopy::{StdStream, encode};
        use tokio::io::AsyncWriteExt;
        let (mut server, client) = tokio::io::duplex(1024);
        let mut wire = encode(StdStream::Stdout, b"hello\n");
        wire.extend(encode(StdStream::Stderr, b"oops\n"));
        server.write_all(&wire).await.unwrap();
        server.shutdown().await.unwrap();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let streams = Streams {
            stdin: false,
            stdout: true,
            stderr: true,
            tty: false,
        };
        stream::pump_to(
            client,
            streams,
            None,
            stream::Sinks {
                out: &mut out,
                err: &mut err,
            },
        )
        .await
        .unwrap();
        assert_eq!(
            (out.as_slice(), err.as_slice()),
            (&b"hello\n"[..], &b"oops\n"[..])
        );
        let (mut server, client) = tokio::io::duplex(1024);
        server.write_all(b"\x01raw tty\r\n").await.unwrap();
        drop(server);
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let streams = Streams {
            tty: true,
            ..streams
        };
        stream::pump_to(
            client,
            streams,
            None,
            stream::Sinks {
                out: &mut out,
                err: &mut err,
            },
        )
        .await
        .unwrap();
        assert_eq!(out, b"\x01raw tty\r\n");
        assert!(err.is_empty());
    }

    #[test]
    fn attach_queries() {
        assert_eq!(
            attach_query(false, true, true, None),
            "?stream=1&stdout=1&stderr=1"
        );
        assert_eq!(
            attach_query(true, true, false, Some("ctrl-x")),
            "?stream=1&stdin=1&stdout=1&detachKeys=ctrl-x"
        );
    }
}
