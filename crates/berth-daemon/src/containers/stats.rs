//! `stats`: samples of a container's cgroup counters (cgroup v1 `cpuacct`, `cpu`, `memory`,
//! `pids`, `blkio`, or their v2 files) and of its network interfaces, shaped as Docker's
//! `StatsResponse`, one per second.
//!
//! As in moby, each sample carries the previous one's CPU figures (`precpu_stats`), from
//! which clients compute CPU %. A single sample (`stream=false`) therefore needs an earlier
//! CPU reading, unless `one-shot` asks for one reading only. moby takes that priming reading
//! a whole second (its stream interval) before the one it sends; berth takes it
//! [`PRIME_WINDOW`] before, so that `stats --no-stream` answers in about a tenth of a second
//! instead of one (see [`PRIME_WINDOW`] for what that costs in precision).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use berth_api::models::{
    ContainerBlkioStatEntry, ContainerBlkioStats, ContainerCpuStats, ContainerCpuUsage,
    ContainerMemoryStats, ContainerNetworkStats, ContainerPidsStats, ContainerStatsResponse,
    ContainerThrottlingData,
};
use tokio::sync::mpsc;

use super::cgroupfs::{self, ContainerCgroup};
use super::{Container, rfc3339};
use crate::daemon::Daemon;
use crate::error::ServiceResult;

/// Time between two samples of a stream.
const INTERVAL: Duration = Duration::from_secs(1);

/// How long before the sample it sends a single sample (`stream=false`, not `one-shot`) takes
/// its priming CPU reading, the one its `precpu_stats` carry.
///
/// moby waits a whole stream interval (1 s), so `docker stats --no-stream` over any number of
/// containers takes more than a second. A shorter window answers sooner but measures CPU %
/// less precisely: clients divide the container's CPU time (nanoseconds, exact) by the host's
/// (`system_cpu_usage`, the /proc/stat sum, which the kernel reports in 10 ms ticks), and over
/// 100 ms on a 2-CPU host that sum grows by about 20 ticks, one of which more or less is ±5 %
/// of the figure (1 s: ±0.5 %); a bursty container's figure also swings more over a short
/// window. The alternative, reusing the last reading some earlier request left behind, would
/// answer at once but make the figure's window depend on who asked before and when, and needs
/// daemon state to invalidate when a container restarts; a fixed window keeps every answer
/// self-contained, as moby's are.
const PRIME_WINDOW: Duration = Duration::from_millis(100);

/// What a stats request asks for.
#[derive(Debug, Clone, Copy)]
pub struct StatsRequest {
    /// One sample per second until the client leaves (or the container is removed).
    pub stream: bool,
    /// With `stream=false`: a single reading, without the priming one (`precpu_stats` empty).
    pub one_shot: bool,
}

/// Where the counters of a running container are read.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Source {
    cgroup_path: String,
    pid: i64,
    host_network: bool,
}

impl Daemon {
    /// `GET /containers/{id}/stats`: the samples, as they are taken. A container that is not
    /// running yields empty samples (name and ID only), as moby's do.
    pub fn container_stats(
        &self,
        reference: &str,
        request: StatsRequest,
    ) -> ServiceResult<mpsc::Receiver<ContainerStatsResponse>> {
        let container = self.containers.get(reference)?;
        let (tx, rx) = mpsc::channel(2);
        let daemon = self.handle();
        tokio::spawn(async move {
            daemon.stream_stats(container, request, tx).await;
        });
        Ok(rx)
    }

    async fn stream_stats(
        &self,
        container: Arc<Container>,
        request: StatsRequest,
        tx: mpsc::Sender<ContainerStatsResponse>,
    ) {
        let mut lifecycle = container.watch();
        let mut previous: Option<ContainerStatsResponse> = None;
        // The cgroup's directories, found once per run of the container's process.
        let mut reader: Option<Reader> = None;
        if !request.stream && !request.one_shot {
            // moby primes `precpu_stats` with a reading it does not send; only its CPU
            // figures are needed.
            if let Some(source) = self.stats_source(&container) {
                match read(&container.id, None, source, Reader::cpu_only).await {
                    Some((primed, r)) => {
                        previous = Some(primed);
                        reader = Some(r);
                    }
                    None => return,
                }
                tokio::select! {
                    _ = tokio::time::sleep(PRIME_WINDOW) => {}
                    _ = lifecycle.wait_for(|l| l.removed) => return,
                    _ = tx.closed() => return,
                }
            }
        }
        loop {
            if lifecycle.borrow().removed {
                return;
            }
            let mut sample = match self.stats_source(&container) {
                Some(source) => {
                    match read(&container.id, reader.take(), source, Reader::sample).await {
                        Some((s, r)) => {
                            reader = Some(r);
                            s
                        }
                        None => return,
                    }
                }
                None => {
                    previous = None;
                    ContainerStatsResponse::default()
                }
            };
            let (id, name) = {
                let r = container.record();
                (r.id.clone(), format!("/{}", r.name))
            };
            sample.id = Some(id);
            sample.name = Some(name);
            sample.os_type = Some("linux".into());
            if let Some(prev) = previous.take() {
                sample.precpu_stats = prev.cpu_stats;
                sample.preread = prev.read;
            } else if sample.read.is_some() {
                sample.precpu_stats = Some(ContainerCpuStats::default());
                sample.preread = Some(rfc3339(None));
            }
            previous = Some(sample.clone());
            if tx.send(sample).await.is_err() {
                return;
            }
            if !request.stream {
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep(INTERVAL) => {}
                _ = lifecycle.wait_for(|l| l.removed) => return,
                _ = tx.closed() => return,
            }
        }
    }

    fn stats_source(&self, container: &Container) -> Option<Source> {
        let r = container.record();
        (r.state.status.is_active() && r.state.pid > 0).then(|| Source {
            cgroup_path: self.cgroup_path(&r.id),
            pid: r.state.pid,
            host_network: r.host_config.network_mode.as_deref() == Some("host"),
        })
    }
}

/// Reads a running container's counters, its cgroup located once.
#[derive(Debug)]
struct Reader {
    source: Source,
    cgroup: ContainerCgroup,
}

/// Runs `f` on a blocking thread with the reader for `source`: `cached` when it was made for
/// the same process and found its cgroup, else a new one. `None` if the task failed.
async fn read(
    container_id: &str,
    cached: Option<Reader>,
    source: Source,
    f: fn(&Reader) -> ContainerStatsResponse,
) -> Option<(ContainerStatsResponse, Reader)> {
    let task = tokio::task::spawn_blocking(move || {
        let reader = match cached {
            Some(r) if r.source == source && r.cgroup.exists() => r,
            _ => Reader {
                cgroup: ContainerCgroup::locate(&source.cgroup_path).unwrap_or_default(),
                source,
            },
        };
        (f(&reader), reader)
    });
    match task.await {
        Ok(out) => Some(out),
        Err(e) => {
            tracing::warn!(container = %container_id, "stats task failed: {e}");
            None
        }
    }
}

impl Reader {
    /// The time and the CPU figures only: what a priming reading needs (blocking).
    fn cpu_only(&self) -> ContainerStatsResponse {
        ContainerStatsResponse {
            read: Some(rfc3339(Some(chrono::Utc::now()))),
            cpu_stats: Some(cpu(&self.cgroup)),
            ..Default::default()
        }
    }

    /// One reading of every counter (blocking).
    fn sample(&self) -> ContainerStatsResponse {
        let cgroup = &self.cgroup;
        let machine_memory = machine_memory();
        let mut out = ContainerStatsResponse {
            read: Some(rfc3339(Some(chrono::Utc::now()))),
            num_procs: Some(0),
            cpu_stats: Some(cpu(cgroup)),
            ..Default::default()
        };
        if let Some(dir) = cgroup.v2() {
            out.memory_stats = Some(memory_v2(dir, machine_memory));
            out.blkio_stats = Some(blkio_v2(
                &cgroupfs::read(dir, "io.stat").unwrap_or_default(),
            ));
            out.pids_stats = Some(pids(dir));
        } else {
            if let Some(dir) = cgroup.v1("memory") {
                out.memory_stats = Some(memory_v1(dir, machine_memory));
            }
            if let Some(dir) = cgroup.v1("blkio") {
                out.blkio_stats = Some(blkio_v1(dir));
            }
            if let Some(dir) = cgroup.v1("pids") {
                out.pids_stats = Some(pids(dir));
            }
        }
        if !self.source.host_network {
            let dev = std::fs::read_to_string(format!("/proc/{}/net/dev", self.source.pid))
                .unwrap_or_default();
            let networks = net_dev(&dev);
            out.networks = (!networks.is_empty()).then_some(networks);
        }
        out
    }
}

/// The container's CPU counters with the host's beside them, read back to back (blocking).
fn cpu(cgroup: &ContainerCgroup) -> ContainerCpuStats {
    let mut cpu = match cgroup.v2() {
        Some(dir) => cpu_v2(&cgroupfs::read(dir, "cpu.stat").unwrap_or_default()),
        None => cpu_v1(cgroup),
    };
    let proc_stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let (system_cpu_usage, online_cpus) = system_cpu(&proc_stat, clock_ticks());
    cpu.system_cpu_usage = Some(system_cpu_usage);
    cpu.online_cpus = Some(online_cpus);
    cpu
}

/// Host CPU time in nanoseconds (the first seven fields of the `cpu` line of /proc/stat, as
/// moby adds them) and the number of `cpuN` lines (online CPUs).
fn system_cpu(proc_stat: &str, ticks_per_second: u64) -> (u64, u32) {
    let mut total = 0u64;
    let mut online = 0u32;
    for line in proc_stat.lines() {
        let mut fields = line.split_ascii_whitespace();
        match fields.next() {
            Some("cpu") => {
                let ticks: u64 = fields.take(7).filter_map(|f| f.parse::<u64>().ok()).sum();
                total = ticks.saturating_mul(1_000_000_000) / ticks_per_second.max(1);
            }
            Some(name) if name.len() > 3 && name.starts_with("cpu") => online += 1,
            _ => {}
        }
    }
    (total, online)
}

fn clock_ticks() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .map_or(100, |t| t.max(1) as u64)
}

/// MemTotal of /proc/meminfo in bytes: the limit shown for containers without one.
fn machine_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

fn cpu_v1(cgroup: &ContainerCgroup) -> ContainerCpuStats {
    let mut usage = ContainerCpuUsage::default();
    if let Some(dir) = cgroup.v1("cpuacct") {
        usage.total_usage = cgroupfs::read_u64(dir, "cpuacct.usage");
        usage.percpu_usage = cgroupfs::read(dir, "cpuacct.usage_percpu").map(|text| {
            text.split_ascii_whitespace()
                .filter_map(|v| v.parse().ok())
                .collect()
        });
        let stat = cgroupfs::read(dir, "cpuacct.stat").unwrap_or_default();
        let ns_per_tick = 1_000_000_000 / clock_ticks();
        for (key, ticks) in cgroupfs::flat_keyed(&stat) {
            match key.as_str() {
                "user" => usage.usage_in_usermode = Some(ticks * ns_per_tick),
                "system" => usage.usage_in_kernelmode = Some(ticks * ns_per_tick),
                _ => {}
            }
        }
    }
    let throttling = cgroup
        .v1("cpu")
        .and_then(|dir| cgroupfs::read(dir, "cpu.stat"))
        .map(|text| throttling(&text, "throttled_time", 1))
        .unwrap_or_default();
    ContainerCpuStats {
        cpu_usage: Some(usage),
        throttling_data: Some(throttling),
        ..Default::default()
    }
}

/// cgroup v2 `cpu.stat` (microseconds) as Docker's nanosecond figures.
fn cpu_v2(cpu_stat: &str) -> ContainerCpuStats {
    let values: HashMap<String, u64> = cgroupfs::flat_keyed(cpu_stat).into_iter().collect();
    let ns = |key: &str| values.get(key).map(|v| v * 1000);
    ContainerCpuStats {
        cpu_usage: Some(ContainerCpuUsage {
            total_usage: ns("usage_usec"),
            percpu_usage: None,
            usage_in_kernelmode: ns("system_usec"),
            usage_in_usermode: ns("user_usec"),
        }),
        throttling_data: Some(throttling(cpu_stat, "throttled_usec", 1000)),
        ..Default::default()
    }
}

fn throttling(cpu_stat: &str, time_key: &str, time_scale: u64) -> ContainerThrottlingData {
    let mut out = ContainerThrottlingData {
        periods: Some(0),
        throttled_periods: Some(0),
        throttled_time: Some(0),
    };
    for (key, value) in cgroupfs::flat_keyed(cpu_stat) {
        match key.as_str() {
            "nr_periods" => out.periods = Some(value),
            "nr_throttled" => out.throttled_periods = Some(value),
            k if k == time_key => out.throttled_time = Some(value * time_scale),
            _ => {}
        }
    }
    out
}

fn memory_v1(dir: &Path, machine_memory: u64) -> ContainerMemoryStats {
    let limit = cgroupfs::read_u64(dir, "memory.limit_in_bytes").unwrap_or(u64::MAX);
    ContainerMemoryStats {
        usage: cgroupfs::read_u64(dir, "memory.usage_in_bytes"),
        max_usage: cgroupfs::read_u64(dir, "memory.max_usage_in_bytes"),
        failcnt: cgroupfs::read_u64(dir, "memory.failcnt"),
        stats: Some(
            cgroupfs::flat_keyed(&cgroupfs::read(dir, "memory.stat").unwrap_or_default())
                .into_iter()
                .collect(),
        ),
        limit: Some(effective_limit(limit, machine_memory)),
        ..Default::default()
    }
}

fn memory_v2(dir: &Path, machine_memory: u64) -> ContainerMemoryStats {
    // `max` does not parse: unlimited.
    let limit = cgroupfs::read_u64(dir, "memory.max").unwrap_or(u64::MAX);
    ContainerMemoryStats {
        usage: cgroupfs::read_u64(dir, "memory.current"),
        stats: Some(
            cgroupfs::flat_keyed(&cgroupfs::read(dir, "memory.stat").unwrap_or_default())
                .into_iter()
                .collect(),
        ),
        limit: Some(effective_limit(limit, machine_memory)),
        ..Default::default()
    }
}

/// A limit above the machine's memory (no limit) reads as the machine's memory, as in moby.
fn effective_limit(limit: u64, machine_memory: u64) -> u64 {
    if machine_memory > 0 && limit > machine_memory {
        machine_memory
    } else {
        limit
    }
}

fn pids(dir: &Path) -> ContainerPidsStats {
    ContainerPidsStats {
        current: cgroupfs::read_u64(dir, "pids.current"),
        // `max` (unlimited) is reported as 0.
        limit: Some(cgroupfs::read_u64(dir, "pids.max").unwrap_or(0)),
    }
}

/// v1 blkio: the CFQ/BFQ-independent throttle counters unless the classic ones exist.
fn blkio_v1(dir: &Path) -> ContainerBlkioStats {
    let first = |names: &[&str]| {
        names
            .iter()
            .find_map(|n| cgroupfs::read(dir, n))
            .map(|text| blkio_entries(&text))
    };
    ContainerBlkioStats {
        io_service_bytes_recursive: first(&[
            "blkio.io_service_bytes_recursive",
            "blkio.throttle.io_service_bytes_recursive",
            "blkio.throttle.io_service_bytes",
        ]),
        io_serviced_recursive: first(&[
            "blkio.io_serviced_recursive",
            "blkio.throttle.io_serviced_recursive",
            "blkio.throttle.io_serviced",
        ]),
        ..Default::default()
    }
}

/// `8:0 Read 4096` lines (the `Total` line is left out).
fn blkio_entries(text: &str) -> Vec<ContainerBlkioStatEntry> {
    text.lines()
        .filter_map(|line| {
            let mut f = line.split_ascii_whitespace();
            let (device, op, value) = (f.next()?, f.next()?, f.next()?);
            let (major, minor) = device.split_once(':')?;
            Some(ContainerBlkioStatEntry {
                major: major.parse().ok(),
                minor: minor.parse().ok(),
                op: Some(op.to_string()),
                value: value.parse().ok(),
            })
        })
        .collect()
}

/// v2 `io.stat` (`8:0 rbytes=1 wbytes=2 ...`) as moby reports it: `read` and `write` bytes.
fn blkio_v2(io_stat: &str) -> ContainerBlkioStats {
    let mut entries = Vec::new();
    for line in io_stat.lines() {
        let mut f = line.split_ascii_whitespace();
        let Some((major, minor)) = f.next().and_then(|d| d.split_once(':')) else {
            continue;
        };
        for kv in f {
            let op = match kv.split_once('=') {
                Some(("rbytes", v)) => ("read", v),
                Some(("wbytes", v)) => ("write", v),
                _ => continue,
            };
            entries.push(ContainerBlkioStatEntry {
                major: major.parse().ok(),
                minor: minor.parse().ok(),
                op: Some(op.0.to_string()),
                value: op.1.parse().ok(),
            });
        }
    }
    ContainerBlkioStats {
        io_service_bytes_recursive: Some(entries),
        ..Default::default()
    }
}

/// `/proc/<pid>/net/dev` of the container's namespace: every interface but loopback.
fn net_dev(text: &str) -> HashMap<String, ContainerNetworkStats> {
    let mut out = HashMap::new();
    for line in text.lines().skip(2) {
        let Some((name, counters)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim();
        if name == "lo" {
            continue;
        }
        let v: Vec<u64> = counters
            .split_ascii_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        if v.len() < 12 {
            continue;
        }
        out.insert(
            name.to_string(),
            ContainerNetworkStats {
                rx_bytes: Some(v[0]),
                rx_packets: Some(v[1]),
                rx_errors: Some(v[2]),
                rx_dropped: Some(v[3]),
                tx_bytes: Some(v[8]),
                tx_packets: Some(v[9]),
                tx_errors: Some(v[10]),
                tx_dropped: Some(v[11]),
                ..Default::default()
            },
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_cpu_sums_seven_fields_and_counts_cpus() {
        let stat = "cpu  100 20 30 400 5 6 7 8 0 0\ncpu0 50 10 15 200 2 3 3 4 0 0\n\
                    cpu1 50 10 15 200 3 3 4 4 0 0\nintr 1 2 3\nctxt 99\n";
        let (ns, online) = system_cpu(stat, 100);
        // (100+20+30+400+5+6+7) ticks of 10 ms each; steal (8) is not counted.
        assert_eq!(ns, 568 * 10_000_000);
        assert_eq!(online, 2);
    }

    #[test]
    fn a_priming_reading_has_the_cpu_figures_only() {
        let reader = Reader {
            source: Source {
                cgroup_path: "/berth-test-no-such-cgroup".into(),
                pid: 1,
                host_network: false,
            },
            cgroup: ContainerCgroup::default(),
        };
        let primed = reader.cpu_only();
        assert!(primed.read.is_some());
        let cpu = primed.cpu_stats.expect("cpu_stats");
        // The host's figures come from /proc/stat even when the cgroup is gone.
        assert!(cpu.system_cpu_usage.unwrap() > 0);
        assert!(cpu.online_cpus.unwrap() >= 1);
        assert!(primed.memory_stats.is_none() && primed.networks.is_none());
        let full = reader.sample();
        assert!(full.cpu_stats.is_some() && full.num_procs.is_some());
    }

    #[test]
    fn cpu_v2_converts_microseconds() {
        let cpu = cpu_v2(
            "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\nnr_periods 10\nnr_throttled 2\nthrottled_usec 30\n",
        );
        let usage = cpu.cpu_usage.unwrap();
        assert_eq!(usage.total_usage, Some(1_500_000));
        assert_eq!(usage.usage_in_usermode, Some(1_000_000));
        assert_eq!(usage.usage_in_kernelmode, Some(500_000));
        let t = cpu.throttling_data.unwrap();
        assert_eq!(
            (t.periods, t.throttled_periods, t.throttled_time),
            (Some(10), Some(2), Some(30_000))
        );
    }

    #[test]
    fn v1_throttling_is_already_in_nanoseconds() {
        let t = throttling(
            "nr_periods 3\nnr_throttled 1\nthrottled_time 777\n",
            "throttled_time",
            1,
        );
        assert_eq!(t.throttled_time, Some(777));
    }

    #[test]
    fn unlimited_memory_reads_as_the_machines() {
        assert_eq!(effective_limit(u64::MAX, 8 << 30), 8 << 30);
        assert_eq!(effective_limit(64 << 20, 8 << 30), 64 << 20);
        assert_eq!(effective_limit(64 << 20, 0), 64 << 20);
    }

    #[test]
    fn memory_v1_reads_the_files() {
        let dir = tempfile::tempdir().unwrap();
        let w = |f: &str, v: &str| std::fs::write(dir.path().join(f), v).unwrap();
        w("memory.usage_in_bytes", "1048576\n");
        w("memory.max_usage_in_bytes", "2097152\n");
        w("memory.failcnt", "0\n");
        w("memory.limit_in_bytes", "9223372036854771712\n");
        w("memory.stat", "cache 4096\ntotal_inactive_file 8192\n");
        let m = memory_v1(dir.path(), 1 << 30);
        assert_eq!(m.usage, Some(1_048_576));
        assert_eq!(m.max_usage, Some(2_097_152));
        assert_eq!(m.limit, Some(1 << 30));
        assert_eq!(m.stats.unwrap()["total_inactive_file"], 8192);
    }

    #[test]
    fn blkio_formats() {
        let v1 = blkio_entries("8:0 Read 4096\n8:0 Write 512\n8:0 Total 4608\nTotal 4608\n");
        assert_eq!(v1.len(), 3);
        assert_eq!(v1[0].op.as_deref(), Some("Read"));
        assert_eq!(
            (v1[1].major, v1[1].minor, v1[1].value),
            (Some(8), Some(0), Some(512))
        );
        let v2 = blkio_v2("8:0 rbytes=100 wbytes=200 rios=1 wios=2 dbytes=0 dios=0\n")
            .io_service_bytes_recursive
            .unwrap();
        assert_eq!(v2.len(), 2);
        assert_eq!(
            (v2[0].op.as_deref(), v2[0].value),
            (Some("read"), Some(100))
        );
        assert_eq!(
            (v2[1].op.as_deref(), v2[1].value),
            (Some("write"), Some(200))
        );
    }

    #[test]
    fn net_dev_skips_loopback() {
        let text = "Inter-|   Receive                                                |  Transmit\n \
                    face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
                    lo:     100       1    0    0    0     0          0         0      100       1    0    0    0     0       0          0\n  \
                    eth0:    1234      10    1    2    0     0          0         0      5678      20    3    4    0     0       0          0\n";
        let nets = net_dev(text);
        assert_eq!(nets.len(), 1);
        let eth0 = &nets["eth0"];
        assert_eq!(
            (
                eth0.rx_bytes,
                eth0.rx_packets,
                eth0.rx_errors,
                eth0.rx_dropped
            ),
            (Some(1234), Some(10), Some(1), Some(2))
        );
        assert_eq!(
            (
                eth0.tx_bytes,
                eth0.tx_packets,
                eth0.tx_errors,
                eth0.tx_dropped
            ),
            (Some(5678), Some(20), Some(3), Some(4))
        );
    }
}
