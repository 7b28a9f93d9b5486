//! Container commands that do not attach: stop, kill, restart, rm, wait, rename, logs, top,
//! port, prune, export and `container inspect`.

use std::collections::HashMap;
use std::io::Write;

use anyhow::{Result, anyhow, bail};
use berth_api::stdcopy::{Decoder, StdStream};
use clap::Args;
use hyper::Method;
use serde::Deserialize;

use super::{Ctx, StatusError, confirm, for_each_arg, parse_filters, print_out};
use crate::client::{self, enc, enc_path, for_each_chunk, query};
use crate::output::{human_size, write_table};
use crate::timefmt::{get_timestamp, now_unix};

/// `berth stop` (and `berth restart`)
#[derive(Args, Debug)]
pub struct StopArgs {
    /// Signal to send to the container
    #[arg(short = 's', long, value_name = "string")]
    signal: Option<String>,
    /// Seconds to wait before killing the container
    #[arg(
        short = 't',
        long,
        visible_alias = "time",
        value_name = "int",
        allow_hyphen_values = true
    )]
    timeout: Option<i64>,
    /// CONTAINER [CONTAINER...]
    #[arg(value_name = "CONTAINER", required = true)]
    containers: Vec<String>,
}

/// `berth restart` takes the same arguments as `berth stop`.
pub type RestartArgs = StopArgs;

/// `berth kill`
#[derive(Args, Debug)]
pub struct KillArgs {
    /// Signal to send to the container
    #[arg(short = 's', long, value_name = "string")]
    signal: Option<String>,
    /// CONTAINER [CONTAINER...]
    #[arg(value_name = "CONTAINER", required = true)]
    containers: Vec<String>,
}

/// `berth rm`
#[derive(Args, Debug)]
pub struct RmArgs {
    /// Force the removal of a running container (uses SIGKILL)
    #[arg(short = 'f', long)]
    force: bool,
    /// Remove the specified link
    #[arg(short = 'l', long)]
    link: bool,
    /// Remove anonymous volumes associated with the container
    #[arg(short = 'v', long)]
    volumes: bool,
    /// CONTAINER [CONTAINER...]
    #[arg(value_name = "CONTAINER", required = true)]
    containers: Vec<String>,
}

/// `berth wait`
#[derive(Args, Debug)]
pub struct WaitArgs {
    /// CONTAINER [CONTAINER...]
    #[arg(value_name = "CONTAINER", required = true)]
    containers: Vec<String>,
}

/// `berth rename`
#[derive(Args, Debug)]
pub struct RenameArgs {
    /// CONTAINER
    #[arg(value_name = "CONTAINER")]
    old: String,
    /// NEW_NAME
    #[arg(value_name = "NEW_NAME")]
    new: String,
}

/// `berth logs`
#[derive(Args, Debug)]
pub struct LogsArgs {
    /// Show extra details provided to logs
    #[arg(long)]
    details: bool,
    /// Follow log output
    #[arg(short = 'f', long)]
    follow: bool,
    /// Show logs since timestamp (e.g. "2013-01-02T13:23:37Z") or relative (e.g. "42m" for 42 minutes)
    #[arg(long, value_name = "string")]
    since: Option<String>,
    /// Number of lines to show from the end of the logs
    #[arg(short = 'n', long, value_name = "string", default_value = "all")]
    tail: String,
    /// Show timestamps
    #[arg(short = 't', long)]
    timestamps: bool,
    /// Show logs before a timestamp (e.g. "2013-01-02T13:23:37Z") or relative (e.g. "42m" for 42 minutes)
    #[arg(long, value_name = "string")]
    until: Option<String>,
    /// CONTAINER
    #[arg(value_name = "CONTAINER")]
    container: String,
}

/// `berth top`
#[derive(Args, Debug)]
pub struct TopArgs {
    /// CONTAINER
    #[arg(value_name = "CONTAINER")]
    container: String,
    /// [ps OPTIONS]
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    ps_args: Vec<String>,
}

/// `berth port`
#[derive(Args, Debug)]
pub struct PortArgs {
    /// CONTAINER
    #[arg(value_name = "CONTAINER")]
    container: String,
    /// [PRIVATE_PORT[/PROTO]]
    #[arg(value_name = "PRIVATE_PORT[/PROTO]")]
    port: Option<String>,
}

/// `berth container prune`
#[derive(Args, Debug)]
pub struct PruneArgs {
    /// Provide filter values (e.g. "until=<timestamp>")
    #[arg(long, value_name = "filter")]
    filter: Vec<String>,
    /// Do not prompt for confirmation
    #[arg(short = 'f', long)]
    force: bool,
}

/// `berth export`
#[derive(Args, Debug)]
pub struct ExportArgs {
    /// Write to a file, instead of STDOUT
    #[arg(short = 'o', long, value_name = "string")]
    output: Option<String>,
    /// CONTAINER
    #[arg(value_name = "CONTAINER")]
    container: String,
}

/// `berth container inspect`
#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Format output using a custom template
    #[arg(short = 'f', long, value_name = "string")]
    format: Option<String>,
    /// Display total file sizes
    #[arg(short = 's', long)]
    size: bool,
    /// CONTAINER [CONTAINER...]
    #[arg(value_name = "CONTAINER", required = true)]
    containers: Vec<String>,
}

fn stop_query(signal: &Option<String>, timeout: Option<i64>) -> String {
    let mut q = Vec::new();
    if let Some(s) = signal {
        q.push(("signal", s.clone()));
    }
    if let Some(t) = timeout {
        q.push(("t", t.to_string()));
    }
    query(&q)
}

/// `berth stop`.
pub async fn stop(ctx: &Ctx, a: StopArgs) -> Result<()> {
    let q = stop_query(&a.signal, a.timeout);
    for_each_arg(&a.containers, |c| {
        let path = format!("/containers/{}/stop{q}", enc_path(&c));
        async move {
            ctx.client.call(Method::POST, &path).await?;
            Ok(Some(c))
        }
    })
    .await
}

/// `berth restart` (sequential, like docker).
pub async fn restart(ctx: &Ctx, a: RestartArgs) -> Result<()> {
    let q = stop_query(&a.signal, a.timeout);
    let mut errors = Vec::new();
    for c in &a.containers {
        match ctx
            .client
            .call(
                Method::POST,
                &format!("/containers/{}/restart{q}", enc_path(c)),
            )
            .await
        {
            Ok(_) => print_out(format!("{c}\n").as_bytes())?,
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(anyhow::Error::new(StatusError {
            code: 1,
            message: Some(errors.join("\n")),
        }))
    }
}

/// `berth kill`.
pub async fn kill(ctx: &Ctx, a: KillArgs) -> Result<()> {
    let q = match &a.signal {
        Some(s) => query(&[("signal", s.clone())]),
        None => String::new(),
    };
    for_each_arg(&a.containers, |c| {
        let path = format!("/containers/{}/kill{q}", enc_path(&c));
        async move {
            ctx.client.call(Method::POST, &path).await?;
            Ok(Some(c))
        }
    })
    .await
}

/// `berth rm`: removals run concurrently; with `-f` a missing container is only reported.
pub async fn rm(ctx: &Ctx, a: RmArgs) -> Result<()> {
    let mut q = Vec::new();
    if a.volumes {
        q.push(("v", "1".to_string()));
    }
    if a.link {
        q.push(("link", "1".to_string()));
    }
    if a.force {
        q.push(("force", "1".to_string()));
    }
    let q = query(&q);
    let force = a.force;
    for_each_arg(&a.containers, |c| {
        let name = c.trim_matches('/').to_string();
        let path = format!("/containers/{}{q}", enc_path(&name));
        async move {
            if name.is_empty() {
                bail!("container name cannot be empty");
            }
            match ctx.client.call(Method::DELETE, &path).await {
                Ok(_) => Ok(Some(c)),
                Err(e) if force && client::is_not_found(&e) => {
                    eprintln!("{e:#}");
                    Ok(None)
                }
                Err(e) => Err(e),
            }
        }
    })
    .await
}

/// `berth wait`: prints each container's exit code.
pub async fn wait(ctx: &Ctx, a: WaitArgs) -> Result<()> {
    let mut errors = Vec::new();
    for c in &a.containers {
        let reply = ctx
            .client
            .call_bytes(Method::POST, &format!("/containers/{}/wait", enc_path(c)))
            .await;
        let parsed = reply.and_then(|b| {
            serde_json::from_slice::<berth_api::models::ContainerWaitResponse>(&b)
                .map_err(|e| anyhow!("decoding wait reply: {e}"))
        });
        match parsed {
            Ok(w) => print_out(format!("{}\n", w.status_code).as_bytes())?,
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(anyhow::Error::new(StatusError {
            code: 1,
            message: Some(errors.join("\n")),
        }))
    }
}

/// `berth rename`.
pub async fn rename(ctx: &Ctx, a: RenameArgs) -> Result<()> {
    let (old, new) = (a.old.trim(), a.new.trim());
    if old.is_empty() || new.is_empty() {
        bail!("Error: Neither old nor new names may be empty");
    }
    let path = format!("/containers/{}/rename?name={}", enc_path(old), enc(new));
    if let Err(e) = ctx.client.call(Method::POST, &path).await {
        eprintln!("{e:#}");
        bail!("Error: failed to rename container named {old}");
    }
    Ok(())
}

#[derive(Deserialize, Default)]
struct TtyInfo {
    #[serde(rename = "Id", default)]
    id: String,
    #[serde(rename = "Config", default)]
    config: TtyConfig,
}

#[derive(Deserialize, Default)]
struct TtyConfig {
    #[serde(rename = "Tty", default)]
    tty: bool,
}

/// `berth logs`: inspects for `Config.Tty`, then streams raw or stdcopy-decoded output.
pub async fn logs(ctx: &Ctx, a: LogsArgs) -> Result<()> {
    let info: TtyInfo = ctx
        .client
        .get_json(&format!("/containers/{}/json", enc_path(&a.container)))
        .await?;
    let now = now_unix();
    let mut q = vec![("stdout", "1".to_string()), ("stderr", "1".to_string())];
    if let Some(s) = &a.since {
        q.push(("since", get_timestamp(s, now)?));
    }
    if let Some(u) = &a.until {
        q.push(("until", get_timestamp(u, now)?));
    }
    if a.timestamps {
        q.push(("timestamps", "1".into()));
    }
    if a.details {
        q.push(("details", "1".into()));
    }
    if a.follow {
        q.push(("follow", "1".into()));
    }
    q.push(("tail", a.tail.clone()));
    let resp = ctx
        .client
        .call(
            Method::GET,
            &format!("/containers/{}/logs{}", info.id, query(&q)),
        )
        .await?;
    let tty = info.config.tty;
    let mut decoder = Decoder::default();
    for_each_chunk(resp, |chunk| {
        if tty {
            let mut out = std::io::stdout().lock();
            out.write_all(chunk)?;
            out.flush()?;
            return Ok(());
        }
        decoder.feed(chunk);
        while let Some((stream, payload)) = decoder.next_frame()? {
            if stream == StdStream::Stderr {
                let mut err = std::io::stderr().lock();
                err.write_all(&payload)?;
                err.flush()?;
            } else {
                let mut out = std::io::stdout().lock();
                out.write_all(&payload)?;
                out.flush()?;
            }
        }
        Ok(())
    })
    .await
}

#[derive(Deserialize)]
struct TopReply {
    #[serde(rename = "Titles", default)]
    titles: Vec<String>,
    #[serde(rename = "Processes", default)]
    processes: Vec<Vec<String>>,
}

/// `berth top`.
pub async fn top(ctx: &Ctx, a: TopArgs) -> Result<()> {
    let q = if a.ps_args.is_empty() {
        String::new()
    } else {
        query(&[("ps_args", a.ps_args.join(" "))])
    };
    let reply: TopReply = ctx
        .client
        .get_json(&format!("/containers/{}/top{q}", enc_path(&a.container)))
        .await?;
    let mut lines = vec![reply.titles.join("\t")];
    lines.extend(reply.processes.iter().map(|p| p.join("\t")));
    let mut out = Vec::new();
    write_table(&mut out, &lines, 20, 3)?;
    print_out(&out)
}

#[derive(Deserialize, Default)]
struct PortInfo {
    #[serde(rename = "NetworkSettings", default)]
    network_settings: PortSettings,
}

#[derive(Deserialize, Default)]
struct PortSettings {
    #[serde(rename = "Ports", default)]
    ports: Option<HashMap<String, Option<Vec<PortFrontend>>>>,
}

#[derive(Deserialize, Default, Clone)]
struct PortFrontend {
    #[serde(rename = "HostIp", default)]
    host_ip: String,
    #[serde(rename = "HostPort", default)]
    host_port: String,
}

fn join_host_port(host: &str, port: &str) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Compares strings with digit runs ordered numerically (`sortorder.NaturalLess`).
pub fn natural_less(a: &str, b: &str) -> bool {
    let (ab, bb) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    while i < ab.len() && j < bb.len() {
        if ab[i].is_ascii_digit() && bb[j].is_ascii_digit() {
            let si = i;
            while i < ab.len() && ab[i].is_ascii_digit() {
                i += 1;
            }
            let sj = j;
            while j < bb.len() && bb[j].is_ascii_digit() {
                j += 1;
            }
            let (na, nb) = (
                a[si..i].trim_start_matches('0'),
                b[sj..j].trim_start_matches('0'),
            );
            if na.len() != nb.len() {
                return na.len() < nb.len();
            }
            if na != nb {
                return na < nb;
            }
            continue;
        }
        if ab[i] != bb[j] {
            return ab[i] < bb[j];
        }
        i += 1;
        j += 1;
    }
    ab.len() - i < bb.len() - j
}

/// `berth port`.
pub async fn port(ctx: &Ctx, a: PortArgs) -> Result<()> {
    let info: PortInfo = ctx
        .client
        .get_json(&format!("/containers/{}/json", enc_path(&a.container)))
        .await?;
    let ports = info.network_settings.ports.unwrap_or_default();
    let mut out: Vec<String> = Vec::new();
    if let Some(p) = &a.port {
        let (num, proto) = p.split_once('/').unwrap_or((p, "tcp"));
        let proto = if proto.is_empty() { "tcp" } else { proto };
        if num.parse::<u16>().is_err() {
            bail!(
                "Error: invalid port ({num}): strconv.ParseUint: parsing {num:?}: invalid syntax"
            );
        }
        let frontends = ports
            .get(&format!("{num}/{proto}"))
            .cloned()
            .flatten()
            .unwrap_or_default();
        if frontends.is_empty() {
            bail!("Error: No public port '{p}' published for {}", a.container);
        }
        out.extend(
            frontends
                .iter()
                .map(|f| join_host_port(&f.host_ip, &f.host_port)),
        );
    } else {
        for (from, frontends) in &ports {
            for f in frontends.iter().flatten() {
                out.push(format!(
                    "{from} -> {}",
                    join_host_port(&f.host_ip, &f.host_port)
                ));
            }
        }
    }
    if !out.is_empty() {
        out.sort_by(|x, y| {
            if natural_less(x, y) {
                std::cmp::Ordering::Less
            } else if natural_less(y, x) {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        });
        print_out(format!("{}\n", out.join("\n")).as_bytes())?;
    }
    Ok(())
}

#[derive(Deserialize, Default)]
struct ContainerPruneReply {
    #[serde(rename = "ContainersDeleted", default)]
    deleted: Option<Vec<String>>,
    #[serde(rename = "SpaceReclaimed", default)]
    space: u64,
}

/// Runs `POST /containers/prune`; returns (space reclaimed, report text).
pub async fn prune_containers(
    ctx: &Ctx,
    filters: &berth_api::filters::Filters,
) -> Result<(u64, String)> {
    let q = if filters.is_empty() {
        String::new()
    } else {
        query(&[("filters", filters.to_json())])
    };
    let body = ctx
        .client
        .call_bytes(Method::POST, &format!("/containers/prune{q}"))
        .await?;
    let reply: ContainerPruneReply = serde_json::from_slice(&body)?;
    let deleted = reply.deleted.unwrap_or_default();
    if deleted.is_empty() {
        return Ok((0, String::new()));
    }
    let mut text = "Deleted Containers:\n".to_string();
    for id in &deleted {
        text.push_str(id);
        text.push('\n');
    }
    Ok((reply.space, text))
}

/// `berth container prune`.
pub async fn prune(ctx: &Ctx, a: PruneArgs) -> Result<()> {
    let filters = parse_filters(&a.filter)?;
    if !a.force
        && !confirm(
            "WARNING! This will remove all stopped containers.\nAre you sure you want to continue?",
        )
    {
        return Ok(());
    }
    let (space, text) = prune_containers(ctx, &filters).await?;
    let mut out = String::new();
    if !text.is_empty() {
        out.push_str(&text);
        out.push('\n');
    }
    out.push_str(&format!(
        "Total reclaimed space: {}\n",
        human_size(space as f64)
    ));
    print_out(out.as_bytes())
}

/// Streams a tar response to `-o FILE` (written beside it, then renamed) or to stdout,
/// refusing a terminal stdout like docker.
pub async fn save_stream(
    resp: hyper::Response<hyper::body::Incoming>,
    output: Option<&str>,
) -> Result<()> {
    match output {
        Some(path) => {
            let target = std::path::Path::new(path);
            let dir = target
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(std::path::Path::new("."));
            let tmp = dir.join(format!(".berth_temp_{}", std::process::id()));
            let result = async {
                let mut file = std::fs::File::create(&tmp)
                    .map_err(|e| anyhow!("failed to create file: {e}"))?;
                for_each_chunk(resp, |c| Ok(file.write_all(c)?)).await?;
                file.sync_all()?;
                std::fs::rename(&tmp, target).map_err(|e| anyhow!("failed to save to {path}: {e}"))
            }
            .await;
            if result.is_err() {
                let _ = std::fs::remove_file(&tmp);
            }
            result
        }
        None => {
            let mut out = std::io::stdout().lock();
            for_each_chunk(resp, |c| Ok(out.write_all(c)?)).await?;
            out.flush()?;
            Ok(())
        }
    }
}

/// `berth export`.
pub async fn export(ctx: &Ctx, a: ExportArgs) -> Result<()> {
    if a.output.is_none() && super::stream::stdout_is_tty() {
        bail!("cowardly refusing to save to a terminal. Use the -o flag or redirect");
    }
    let resp = ctx
        .client
        .call(
            Method::GET,
            &format!("/containers/{}/export", enc_path(&a.container)),
        )
        .await?;
    save_stream(resp, a.output.as_deref()).await
}

/// `berth container inspect`.
pub async fn inspect(ctx: &Ctx, a: InspectArgs) -> Result<()> {
    let size = if a.size { "?size=1" } else { "" };
    super::inspect::inspect_refs(&a.containers, a.format.as_deref(), |c| {
        let path = format!("/containers/{}/json{size}", enc_path(&c));
        async move { ctx.client.call_bytes(Method::GET, &path).await }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn natural_order() {
        assert!(natural_less(
            "80/tcp -> 0.0.0.0:8080",
            "443/tcp -> 0.0.0.0:8443"
        ));
        assert!(!natural_less("443/tcp", "80/tcp"));
        assert!(natural_less("9/tcp", "10/tcp"));
        assert!(natural_less("a", "ab"));
        assert!(!natural_less("ab", "a"));
    }

    #[test]
    fn stop_queries() {
        assert_eq!(stop_query(&None, None), "");
        assert_eq!(
            stop_query(&Some("KILL".into()), Some(3)),
            "?signal=KILL&t=3"
        );
    }

    #[test]
    fn host_ports_join_like_go() {
        assert_eq!(join_host_port("0.0.0.0", "80"), "0.0.0.0:80");
        assert_eq!(join_host_port("::", "80"), "[::]:80");
    }
}
