//! `berth stats`: docker's live table of CPU, memory, network, block IO and PIDs, computed
//! from `GET /containers/{id}/stats` samples with the docker CLI's formulas.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Result, bail};
use berth_api::models::{ContainerBlkioStats, ContainerMemoryStats, ContainerStatsResponse};
use clap::Args;
use hyper::Method;
use serde::Deserialize;

use super::{Ctx, docker_config_string, print_out};
use crate::client::{JsonStream, enc_path, for_each_chunk, query};
use crate::output::{bytes_size, human_size_prec, short_id, write_list};
use crate::template::{map_of, s};
use gotmpl::Value;

/// docker's default stats table.
const DEFAULT_FORMAT: &str = "table {{.ID}}\t{{.Name}}\t{{.CPUPerc}}\t{{.MemUsage}}\t{{.MemPerc}}\t{{.NetIO}}\t{{.BlockIO}}\t{{.PIDs}}";

/// How long a container may stay without a sample before its row shows `--`.
const SAMPLE_TIMEOUT: Duration = Duration::from_secs(2);

/// `berth stats`
#[derive(Args, Debug)]
pub struct StatsArgs {
    /// Show all containers (default shows just running)
    #[arg(short = 'a', long)]
    all: bool,
    /// Format output using a custom template
    #[arg(long, value_name = "string")]
    format: Option<String>,
    /// Disable streaming stats and only pull the first result
    #[arg(long = "no-stream")]
    no_stream: bool,
    /// Do not truncate output
    #[arg(long = "no-trunc")]
    no_trunc: bool,
    /// [CONTAINER...]
    #[arg(value_name = "CONTAINER")]
    containers: Vec<String>,
}

/// One row: what the docker CLI keeps per container (`StatsEntry`).
#[derive(Debug, Clone, Default, PartialEq)]
struct StatsEntry {
    /// The container as the user named it (or its ID).
    container: String,
    /// Name with its leading slash, as the daemon sends it.
    name: String,
    id: String,
    cpu_percentage: f64,
    memory: f64,
    memory_limit: f64,
    memory_percentage: f64,
    network_rx: f64,
    network_tx: f64,
    block_read: f64,
    block_write: f64,
    pids_current: u64,
    /// No (recent) sample: every figure shows `--`.
    invalid: bool,
    /// Why there is no sample.
    error: Option<String>,
    /// Neither a first sample nor an error arrived yet.
    pending: bool,
}

/// docker's `calculateCPUPercentUnix`: the container's share of the host's CPU time between
/// two samples, times the number of CPUs.
fn cpu_percent(v: &ContainerStatsResponse) -> f64 {
    let cpu = v.cpu_stats.clone().unwrap_or_default();
    let pre = v.precpu_stats.clone().unwrap_or_default();
    let total = |c: &berth_api::models::ContainerCpuStats| {
        c.cpu_usage
            .as_ref()
            .and_then(|u| u.total_usage)
            .unwrap_or(0) as f64
    };
    let cpu_delta = total(&cpu) - total(&pre);
    let system_delta =
        cpu.system_cpu_usage.unwrap_or(0) as f64 - pre.system_cpu_usage.unwrap_or(0) as f64;
    let mut online = f64::from(cpu.online_cpus.unwrap_or(0));
    if online == 0.0 {
        online = cpu
            .cpu_usage
            .as_ref()
            .and_then(|u| u.percpu_usage.as_ref())
            .map_or(0, Vec::len) as f64;
    }
    if system_delta > 0.0 && cpu_delta > 0.0 {
        cpu_delta / system_delta * online * 100.0
    } else {
        0.0
    }
}

/// docker's `calculateMemUsageUnixNoCache`: usage minus the inactive page cache
/// (`total_inactive_file` on cgroup v1, `inactive_file` on v2).
fn memory_no_cache(mem: &ContainerMemoryStats) -> f64 {
    let usage = mem.usage.unwrap_or(0);
    let stats = mem.stats.clone().unwrap_or_default();
    if let Some(v) = stats.get("total_inactive_file")
        && *v < usage
    {
        return (usage - v) as f64;
    }
    let inactive = stats.get("inactive_file").copied().unwrap_or(0);
    if inactive < usage {
        (usage - inactive) as f64
    } else {
        usage as f64
    }
}

fn block_io(blkio: &ContainerBlkioStats) -> (f64, f64) {
    let (mut read, mut write) = (0u64, 0u64);
    for e in blkio.io_service_bytes_recursive.iter().flatten() {
        match e.op.as_deref().and_then(|op| op.chars().next()) {
            Some('r' | 'R') => read += e.value.unwrap_or(0),
            Some('w' | 'W') => write += e.value.unwrap_or(0),
            _ => {}
        }
    }
    (read as f64, write as f64)
}

/// A row from one sample.
fn entry_from(container: &str, v: &ContainerStatsResponse) -> StatsEntry {
    let mem = v.memory_stats.clone().unwrap_or_default();
    let memory = memory_no_cache(&mem);
    let memory_limit = mem.limit.unwrap_or(0) as f64;
    let memory_percentage = if memory_limit != 0.0 {
        memory / memory_limit * 100.0
    } else {
        0.0
    };
    let (block_read, block_write) = block_io(&v.blkio_stats.clone().unwrap_or_default());
    let (mut rx, mut tx) = (0.0, 0.0);
    for net in v.networks.iter().flat_map(HashMap::values) {
        rx += net.rx_bytes.unwrap_or(0) as f64;
        tx += net.tx_bytes.unwrap_or(0) as f64;
    }
    StatsEntry {
        container: container.to_string(),
        name: v.name.clone().unwrap_or_default(),
        id: v.id.clone().unwrap_or_default(),
        cpu_percentage: cpu_percent(v),
        memory,
        memory_limit,
        memory_percentage,
        network_rx: rx,
        network_tx: tx,
        block_read,
        block_write,
        pids_current: v.pids_stats.as_ref().and_then(|p| p.current).unwrap_or(0),
        invalid: false,
        error: None,
        pending: false,
    }
}

/// The row as the format sees it (docker's `statsContext`).
fn row(e: &StatsEntry, trunc: bool) -> Value {
    let dash = |text: String| if e.invalid { "--".to_string() } else { text };
    let id = if trunc {
        short_id(&e.id).to_string()
    } else {
        e.id.clone()
    };
    let name = e
        .name
        .strip_prefix('/')
        .filter(|n| !n.is_empty())
        .unwrap_or("--");
    map_of([
        ("Container", s(&e.container)),
        ("Name", s(name)),
        ("ID", s(id)),
        ("CPUPerc", s(dash(format!("{:.2}%", e.cpu_percentage)))),
        (
            "MemUsage",
            s(if e.invalid {
                "-- / --".to_string()
            } else {
                format!("{} / {}", bytes_size(e.memory), bytes_size(e.memory_limit))
            }),
        ),
        ("MemPerc", s(dash(format!("{:.2}%", e.memory_percentage)))),
        (
            "NetIO",
            s(dash(format!(
                "{} / {}",
                human_size_prec(e.network_rx, 3),
                human_size_prec(e.network_tx, 3)
            ))),
        ),
        (
            "BlockIO",
            s(dash(format!(
                "{} / {}",
                human_size_prec(e.block_read, 3),
                human_size_prec(e.block_write, 3)
            ))),
        ),
        ("PIDs", s(dash(e.pids_current.to_string()))),
    ])
}

fn header() -> Value {
    map_of([
        ("Container", s("CONTAINER")),
        ("Name", s("NAME")),
        ("ID", s("CONTAINER ID")),
        ("CPUPerc", s("CPU %")),
        ("MemUsage", s("MEM USAGE / LIMIT")),
        ("MemPerc", s("MEM %")),
        ("NetIO", s("NET I/O")),
        ("BlockIO", s("BLOCK I/O")),
        ("PIDs", s("PIDS")),
    ])
}

#[derive(Deserialize)]
struct Listed {
    #[serde(rename = "Id")]
    id: String,
}

#[derive(Deserialize)]
struct Event {
    #[serde(rename = "Action", default)]
    action: String,
    #[serde(rename = "Actor", default)]
    actor: Actor,
}

#[derive(Deserialize, Default)]
struct Actor {
    #[serde(rename = "ID", default)]
    id: String,
}

/// The rows being collected, in the order containers were added.
type Table = Arc<Mutex<Vec<StatsEntry>>>;

fn lock(table: &Table) -> std::sync::MutexGuard<'_, Vec<StatsEntry>> {
    table.lock().unwrap_or_else(|p| p.into_inner())
}

/// `berth stats`.
pub async fn stats(ctx: &Ctx, a: StatsArgs) -> Result<()> {
    let format = match a.format.clone().filter(|f| !f.is_empty()) {
        Some(f) => f,
        None => docker_config_string(ctx, "statsFormat").unwrap_or_default(),
    };
    let format = match format.as_str() {
        "" | "table" => DEFAULT_FORMAT.to_string(),
        other => other.to_string(),
    };
    let stream = !a.no_stream;
    let table: Table = Arc::new(Mutex::new(Vec::new()));
    let named = !a.containers.is_empty();
    let containers = if named {
        a.containers.clone()
    } else {
        let q = if a.all { "?all=1" } else { "" };
        let list: Vec<Listed> = ctx.client.get_json(&format!("/containers/json{q}")).await?;
        list.into_iter()
            .map(|c| short_id(&c.id).to_string())
            .collect()
    };
    let mut tasks = Vec::new();
    for c in &containers {
        tasks.push(start_collector(ctx, &table, c, stream));
    }
    if stream && !named {
        watch_events(ctx, &table, a.all, stream);
    }
    if !stream {
        for t in tasks {
            let _ = t.await;
        }
        if named {
            report_errors(&table)?;
        }
        return print_table(&table, &format, !a.no_trunc, false);
    }
    // Streaming: wait for the first samples (or their time limit), then redraw twice a
    // second.
    let deadline = tokio::time::Instant::now() + SAMPLE_TIMEOUT;
    while lock(&table).iter().any(|e| e.pending) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if named {
        report_errors(&table)?;
    }
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        print_table(&table, &format, !a.no_trunc, true)?;
    }
}

/// With containers named on the command line, a failure (such as no such container) ends the
/// command, as docker's does.
fn report_errors(table: &Table) -> Result<()> {
    let errors: Vec<String> = lock(table).iter().filter_map(|e| e.error.clone()).collect();
    if errors.is_empty() {
        Ok(())
    } else {
        bail!("{}", errors.join("\n"))
    }
}

fn print_table(table: &Table, format: &str, trunc: bool, redraw: bool) -> Result<()> {
    let rows: Vec<Value> = lock(table).iter().map(|e| row(e, trunc)).collect();
    let mut text = Vec::new();
    write_list(&mut text, format, &header(), rows)?;
    let out = if redraw {
        redraw_frame(&String::from_utf8_lossy(&text))
    } else {
        text
    };
    print_out(&out)
}

/// One frame of the live table, byte for byte as docker 28 writes it: cursor home, the
/// table, then the same lines again each followed by an erase-to-end-of-line, and an erase
/// of whatever the previous frame left below.
fn redraw_frame(table: &str) -> Vec<u8> {
    let mut frame = format!("\x1b[H{table}");
    let lines: Vec<String> = frame.split('\n').map(str::to_string).collect();
    for line in lines {
        frame.push_str(&line);
        frame.push_str(" \x1b[K\n");
    }
    frame.push_str("\x1b[J");
    frame.into_bytes()
}

/// Adds a row for `container` and keeps it up to date from its stats stream.
fn start_collector(
    ctx: &Ctx,
    table: &Table,
    container: &str,
    stream: bool,
) -> tokio::task::JoinHandle<()> {
    lock(table).push(StatsEntry {
        container: container.to_string(),
        id: container.to_string(),
        invalid: true,
        pending: true,
        ..Default::default()
    });
    let client = ctx.client.clone();
    let table = table.clone();
    let container = container.to_string();
    tokio::spawn(async move {
        let path = format!(
            "/containers/{}/stats{}",
            enc_path(&container),
            query(&[("stream", if stream { "1" } else { "0" }.to_string())])
        );
        let set = |f: &dyn Fn(&mut StatsEntry)| {
            if let Some(e) = lock(&table).iter_mut().find(|e| e.container == container) {
                f(e);
            }
        };
        let collect = async {
            let resp = client.call(Method::GET, &path).await?;
            let mut decoder = JsonStream::default();
            for_each_chunk(resp, |chunk| {
                for sample in decoder.feed::<ContainerStatsResponse>(chunk)? {
                    let fresh = entry_from(&container, &sample);
                    set(&|e| *e = fresh.clone());
                }
                Ok(())
            })
            .await
        };
        // A single sample must come within the docker CLI's time limit; a stream runs until
        // the container goes.
        let result = if stream {
            collect.await
        } else {
            tokio::time::timeout(SAMPLE_TIMEOUT, collect)
                .await
                .unwrap_or_else(|_| Err(anyhow::anyhow!("timeout waiting for stats")))
        };
        if let Err(e) = result {
            set(&|entry| {
                entry.invalid = true;
                entry.pending = false;
                entry.error = Some(format!("{e:#}"));
            });
        }
    })
}

/// Without named containers, follows starts (added) and removals (dropped; exits too
/// unless `-a`), as docker's stats does.
fn watch_events(ctx: &Ctx, table: &Table, all: bool, stream: bool) {
    let client = ctx.client.clone();
    let table = table.clone();
    let ctx_client = ctx.client.clone();
    tokio::spawn(async move {
        let filters = r#"{"type":{"container":true}}"#.to_string();
        let Ok(resp) = client
            .call(
                Method::GET,
                &format!("/events{}", query(&[("filters", filters)])),
            )
            .await
        else {
            return;
        };
        let mut decoder = JsonStream::default();
        let mut started = Vec::new();
        let _ = for_each_chunk(resp, |chunk| {
            for ev in decoder.feed::<Event>(chunk)? {
                let id = short_id(&ev.actor.id).to_string();
                match ev.action.as_str() {
                    "start" if !lock(&table).iter().any(|e| e.container == id) => {
                        started.push(id);
                    }
                    "destroy" => lock(&table).retain(|e| e.container != id),
                    "die" if !all => lock(&table).retain(|e| e.container != id),
                    _ => {}
                }
            }
            for id in started.drain(..) {
                let ctx = Ctx {
                    client: ctx_client.clone(),
                    docker_config: Default::default(),
                    debug: false,
                };
                start_collector(&ctx, &table, &id, stream);
            }
            Ok(())
        })
        .await;
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_api::models::{
        ContainerBlkioStatEntry, ContainerCpuStats, ContainerCpuUsage, ContainerNetworkStats,
        ContainerPidsStats,
    };

    fn cpu(total: u64, system: u64, online: u32) -> ContainerCpuStats {
        ContainerCpuStats {
            cpu_usage: Some(ContainerCpuUsage {
                total_usage: Some(total),
                percpu_usage: Some(vec![total / 2, total / 2]),
                ..Default::default()
            }),
            system_cpu_usage: Some(system),
            online_cpus: Some(online),
            ..Default::default()
        }
    }

    fn sample() -> ContainerStatsResponse {
        ContainerStatsResponse {
            id: Some("a".repeat(64)),
            name: Some("/web".into()),
            cpu_stats: Some(cpu(3_000_000_000, 20_000_000_000, 2)),
            precpu_stats: Some(cpu(2_000_000_000, 10_000_000_000, 2)),
            memory_stats: Some(ContainerMemoryStats {
                usage: Some(10 << 20),
                limit: Some(100 << 20),
                stats: Some(HashMap::from([(
                    "total_inactive_file".to_string(),
                    2 << 20,
                )])),
                ..Default::default()
            }),
            networks: Some(HashMap::from([
                (
                    "eth0".to_string(),
                    ContainerNetworkStats {
                        rx_bytes: Some(1000),
                        tx_bytes: Some(500),
                        ..Default::default()
                    },
                ),
                (
                    "eth1".to_string(),
                    ContainerNetworkStats {
                        rx_bytes: Some(50),
                        tx_bytes: Some(0),
                        ..Default::default()
                    },
                ),
            ])),
            blkio_stats: Some(ContainerBlkioStats {
                io_service_bytes_recursive: Some(vec![
                    ContainerBlkioStatEntry {
                        op: Some("Read".into()),
                        value: Some(4096),
                        ..Default::default()
                    },
                    ContainerBlkioStatEntry {
                        op: Some("write".into()),
                        value: Some(8192),
                        ..Default::default()
                    },
                    ContainerBlkioStatEntry {
                        op: Some("Total".into()),
                        value: Some(12288),
                        ..Default::default()
                    },
                ]),
                ..Default::default()
            }),
            pids_stats: Some(ContainerPidsStats {
                current: Some(3),
                limit: None,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn docker_formulas() {
        let e = entry_from("web", &sample());
        // 1 s of container CPU over 10 s of host CPU on 2 CPUs.
        assert!(
            (e.cpu_percentage - 20.0).abs() < 1e-9,
            "{}",
            e.cpu_percentage
        );
        assert_eq!(e.memory, (8u64 << 20) as f64);
        assert!((e.memory_percentage - 8.0).abs() < 1e-9);
        assert_eq!((e.network_rx, e.network_tx), (1050.0, 500.0));
        assert_eq!((e.block_read, e.block_write), (4096.0, 8192.0));
        assert_eq!(e.pids_current, 3);
        // No previous sample, or an idle container: 0 %.
        let mut first = sample();
        first.precpu_stats = None;
        first.cpu_stats = Some(cpu(0, 0, 0));
        assert_eq!(cpu_percent(&first), 0.0);
        // Without online_cpus the per-CPU list counts them.
        let mut old = sample();
        if let Some(c) = old.cpu_stats.as_mut() {
            c.online_cpus = None;
        }
        assert!((cpu_percent(&old) - 20.0).abs() < 1e-9);
        // cgroup v2 names its cache inactive_file.
        let v2 = ContainerMemoryStats {
            usage: Some(1000),
            stats: Some(HashMap::from([("inactive_file".to_string(), 400)])),
            ..Default::default()
        };
        assert_eq!(memory_no_cache(&v2), 600.0);
    }

    #[test]
    fn rows_render_like_dockers_table() {
        let e = entry_from("web", &sample());
        let mut out = Vec::new();
        write_list(&mut out, DEFAULT_FORMAT, &header(), vec![row(&e, true)]).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].starts_with("CONTAINER ID   NAME      CPU %     MEM USAGE / LIMIT"),
            "{text}"
        );
        assert!(
            lines[1].starts_with("aaaaaaaaaaaa   web       20.00%    8MiB / 100MiB"),
            "{text}"
        );
        assert!(lines[1].contains("8.00%"), "{text}");
        assert!(lines[1].contains("1.05kB / 500B"), "{text}");
        assert!(lines[1].contains("4.1kB / 8.19kB"), "{text}");
        assert!(lines[1].trim_end().ends_with('3'), "{text}");
        let invalid = StatsEntry {
            container: "x".into(),
            invalid: true,
            ..Default::default()
        };
        let v = row(&invalid, true);
        let mut out = Vec::new();
        write_list(
            &mut out,
            "{{.Name}} {{.CPUPerc}} {{.MemUsage}} {{.PIDs}}",
            &header(),
            vec![v],
        )
        .unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "-- -- -- / -- --\n");
    }

    #[test]
    fn live_frames_match_docker_28() {
        let frame = redraw_frame("t2 1\n");
        assert_eq!(
            frame,
            b"\x1b[Ht2 1\n\x1b[Ht2 1 \x1b[K\n \x1b[K\n\x1b[J".to_vec()
        );
    }
}
