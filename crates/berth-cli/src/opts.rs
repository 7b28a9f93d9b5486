//! `run`/`create` flags and their conversion into a `ContainerCreateBody`, following the
//! docker CLI's `parse()` in `cli/command/container/opts.go`.

use std::collections::HashMap;

use anyhow::{Result, anyhow, bail};
use berth_api::models::{
    ContainerCreateBody, EndpointIpamConfig, EndpointSettings, HealthConfig, HostConfig,
    HostConfigLogConfig, NetworkingConfig,
};
use clap::{ArgAction, Args};

use crate::optparse::{
    enum_from, expand_env, kv_map, parse_duration_ns, parse_kv_file, parse_mem_swap, parse_mount,
    parse_nano_cpus, parse_port_range, parse_ports, parse_ram, parse_restart, parse_ulimit,
    parse_volumes,
};

/// Flags shared by `run` and `create` (docker's `containerOptions` plus `createOptions`).
#[derive(Args, Debug, Default, Clone)]
#[command(disable_help_flag = true)]
pub struct ContainerOpts {
    /// Print usage
    #[arg(long, action = ArgAction::Help)]
    pub help: Option<bool>,
    /// Add a custom host-to-IP mapping (host:ip)
    #[arg(long = "add-host", value_name = "list")]
    pub add_host: Vec<String>,
    /// Add an annotation to the container (passed through to the OCI runtime)
    #[arg(long, value_name = "map")]
    pub annotation: Vec<String>,
    /// Attach to STDIN, STDOUT or STDERR
    #[arg(short = 'a', long, value_name = "list")]
    pub attach: Vec<String>,
    /// Block IO (relative weight), between 10 and 1000, or 0 to disable
    #[arg(long = "blkio-weight", value_name = "uint16")]
    pub blkio_weight: Option<u16>,
    /// Add Linux capabilities
    #[arg(long = "cap-add", value_name = "list")]
    pub cap_add: Vec<String>,
    /// Drop Linux capabilities
    #[arg(long = "cap-drop", value_name = "list")]
    pub cap_drop: Vec<String>,
    /// Optional parent cgroup for the container
    #[arg(long = "cgroup-parent", value_name = "string")]
    pub cgroup_parent: Option<String>,
    /// Cgroup namespace to use (host|private)
    #[arg(long, value_name = "string")]
    pub cgroupns: Option<String>,
    /// Write the container ID to the file
    #[arg(long, value_name = "string")]
    pub cidfile: Option<String>,
    /// Limit CPU CFS (Completely Fair Scheduler) period
    #[arg(long = "cpu-period", value_name = "int")]
    pub cpu_period: Option<i64>,
    /// Limit CPU CFS (Completely Fair Scheduler) quota
    #[arg(long = "cpu-quota", value_name = "int")]
    pub cpu_quota: Option<i64>,
    /// Limit CPU real-time period in microseconds
    #[arg(long = "cpu-rt-period", value_name = "int")]
    pub cpu_rt_period: Option<i64>,
    /// Limit CPU real-time runtime in microseconds
    #[arg(long = "cpu-rt-runtime", value_name = "int")]
    pub cpu_rt_runtime: Option<i64>,
    /// CPU shares (relative weight)
    #[arg(short = 'c', long = "cpu-shares", value_name = "int")]
    pub cpu_shares: Option<i64>,
    /// Number of CPUs
    #[arg(long, value_name = "decimal", value_parser = parse_nano_cpus)]
    pub cpus: Option<i64>,
    /// CPUs in which to allow execution (0-3, 0,1)
    #[arg(long = "cpuset-cpus", value_name = "string")]
    pub cpuset_cpus: Option<String>,
    /// MEMs in which to allow execution (0-3, 0,1)
    #[arg(long = "cpuset-mems", value_name = "string")]
    pub cpuset_mems: Option<String>,
    /// Run container in background and print container ID
    #[arg(short = 'd', long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", action = ArgAction::Set)]
    pub detach: bool,
    /// Override the key sequence for detaching a container
    #[arg(long = "detach-keys", value_name = "string")]
    pub detach_keys: Option<String>,
    /// Add a host device to the container
    #[arg(long, value_name = "list")]
    pub device: Vec<String>,
    /// Add a rule to the cgroup allowed devices list
    #[arg(long = "device-cgroup-rule", value_name = "list")]
    pub device_cgroup_rule: Vec<String>,
    /// Set custom DNS servers
    #[arg(long, value_name = "list")]
    pub dns: Vec<String>,
    /// Set DNS options
    #[arg(long = "dns-option", visible_alias = "dns-opt", value_name = "list")]
    pub dns_option: Vec<String>,
    /// Set custom DNS search domains
    #[arg(long = "dns-search", value_name = "list")]
    pub dns_search: Vec<String>,
    /// Container NIS domain name
    #[arg(long, value_name = "string")]
    pub domainname: Option<String>,
    /// Overwrite the default ENTRYPOINT of the image
    #[arg(long, value_name = "string", allow_hyphen_values = true)]
    pub entrypoint: Option<String>,
    /// Set environment variables
    #[arg(short = 'e', long, value_name = "list", allow_hyphen_values = true)]
    pub env: Vec<String>,
    /// Read in a file of environment variables
    #[arg(long = "env-file", value_name = "list")]
    pub env_file: Vec<String>,
    /// Expose a port or a range of ports
    #[arg(long, value_name = "list")]
    pub expose: Vec<String>,
    /// Add additional groups to join
    #[arg(long = "group-add", value_name = "list")]
    pub group_add: Vec<String>,
    /// Command to run to check health
    #[arg(long = "health-cmd", value_name = "string", allow_hyphen_values = true)]
    pub health_cmd: Option<String>,
    /// Time between running the check (ms|s|m|h) (default 0s)
    #[arg(long = "health-interval", value_name = "duration", value_parser = parse_duration_ns)]
    pub health_interval: Option<i64>,
    /// Consecutive failures needed to report unhealthy
    #[arg(long = "health-retries", value_name = "int")]
    pub health_retries: Option<i64>,
    /// Time between running the check during the start period (ms|s|m|h) (default 0s)
    #[arg(long = "health-start-interval", value_name = "duration", value_parser = parse_duration_ns)]
    pub health_start_interval: Option<i64>,
    /// Start period for the container to initialize before starting health-retries countdown (ms|s|m|h) (default 0s)
    #[arg(long = "health-start-period", value_name = "duration", value_parser = parse_duration_ns)]
    pub health_start_period: Option<i64>,
    /// Maximum time to allow one check to run (ms|s|m|h) (default 0s)
    #[arg(long = "health-timeout", value_name = "duration", value_parser = parse_duration_ns)]
    pub health_timeout: Option<i64>,
    /// Container host name
    #[arg(short = 'h', long, value_name = "string")]
    pub hostname: Option<String>,
    /// Run an init inside the container that forwards signals and reaps processes
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = ArgAction::Set)]
    pub init: Option<bool>,
    /// Keep STDIN open even if not attached
    #[arg(short = 'i', long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", action = ArgAction::Set)]
    pub interactive: bool,
    /// IPv4 address (e.g., 172.30.100.104)
    #[arg(long, value_name = "string")]
    pub ip: Option<String>,
    /// IPv6 address (e.g., 2001:db8::33)
    #[arg(long, value_name = "string")]
    pub ip6: Option<String>,
    /// IPC mode to use
    #[arg(long, value_name = "string")]
    pub ipc: Option<String>,
    /// Container isolation technology
    #[arg(long, value_name = "string")]
    pub isolation: Option<String>,
    /// Set meta data on a container
    #[arg(short = 'l', long, value_name = "list")]
    pub label: Vec<String>,
    /// Read in a line delimited file of labels
    #[arg(long = "label-file", value_name = "list")]
    pub label_file: Vec<String>,
    /// Add link to another container
    #[arg(long, value_name = "list")]
    pub link: Vec<String>,
    /// Logging driver for the container
    #[arg(long = "log-driver", value_name = "string")]
    pub log_driver: Option<String>,
    /// Log driver options
    #[arg(long = "log-opt", value_name = "list")]
    pub log_opt: Vec<String>,
    /// Container MAC address (e.g., 92:d0:c6:0a:29:33)
    #[arg(long = "mac-address", value_name = "string")]
    pub mac_address: Option<String>,
    /// Memory limit
    #[arg(short = 'm', long, value_name = "bytes", value_parser = parse_ram)]
    pub memory: Option<i64>,
    /// Memory soft limit
    #[arg(long = "memory-reservation", value_name = "bytes", value_parser = parse_ram)]
    pub memory_reservation: Option<i64>,
    /// Swap limit equal to memory plus swap: '-1' to enable unlimited swap
    #[arg(long = "memory-swap", value_name = "bytes", value_parser = parse_mem_swap, allow_hyphen_values = true)]
    pub memory_swap: Option<i64>,
    /// Tune container memory swappiness (0 to 100)
    #[arg(
        long = "memory-swappiness",
        value_name = "int",
        allow_hyphen_values = true
    )]
    pub memory_swappiness: Option<i64>,
    /// Attach a filesystem mount to the container
    #[arg(long, value_name = "mount")]
    pub mount: Vec<String>,
    /// Assign a name to the container
    #[arg(long, value_name = "string")]
    pub name: Option<String>,
    /// Connect a container to a network
    #[arg(long, visible_alias = "net", value_name = "network")]
    pub network: Vec<String>,
    /// Add network-scoped alias for the container
    #[arg(
        long = "network-alias",
        visible_alias = "net-alias",
        value_name = "list"
    )]
    pub network_alias: Vec<String>,
    /// Disable any container-specified HEALTHCHECK
    #[arg(long = "no-healthcheck")]
    pub no_healthcheck: bool,
    /// Disable OOM Killer
    #[arg(long = "oom-kill-disable")]
    pub oom_kill_disable: bool,
    /// Tune host's OOM preferences (-1000 to 1000)
    #[arg(long = "oom-score-adj", value_name = "int", allow_hyphen_values = true)]
    pub oom_score_adj: Option<i64>,
    /// PID namespace to use
    #[arg(long, value_name = "string")]
    pub pid: Option<String>,
    /// Tune container pids limit (set -1 for unlimited)
    #[arg(long = "pids-limit", value_name = "int", allow_hyphen_values = true)]
    pub pids_limit: Option<i64>,
    /// Set platform if server is multi-platform capable
    #[arg(long, value_name = "string")]
    pub platform: Option<String>,
    /// Give extended privileges to this container
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", action = ArgAction::Set)]
    pub privileged: bool,
    /// Publish a container's port(s) to the host
    #[arg(short = 'p', long, value_name = "list")]
    pub publish: Vec<String>,
    /// Publish all exposed ports to random ports
    #[arg(short = 'P', long = "publish-all")]
    pub publish_all: bool,
    /// Pull image before running ("always", "missing", "never")
    #[arg(long, value_name = "string", default_value = "missing")]
    pub pull: String,
    /// Suppress the pull output
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Mount the container's root filesystem as read only
    #[arg(long = "read-only", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", action = ArgAction::Set)]
    pub read_only: bool,
    /// Restart policy to apply when a container exits
    #[arg(long, value_name = "string", default_value = "no")]
    pub restart: String,
    /// Automatically remove the container and its associated anonymous volumes when it exits
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", action = ArgAction::Set)]
    pub rm: bool,
    /// Runtime to use for this container
    #[arg(long, value_name = "string")]
    pub runtime: Option<String>,
    /// Security Options
    #[arg(long = "security-opt", value_name = "list")]
    pub security_opt: Vec<String>,
    /// Size of /dev/shm
    #[arg(long = "shm-size", value_name = "bytes", value_parser = parse_ram)]
    pub shm_size: Option<i64>,
    /// Proxy received signals to the process
    #[arg(long = "sig-proxy", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "true", action = ArgAction::Set)]
    pub sig_proxy: bool,
    /// Signal to stop the container
    #[arg(long = "stop-signal", value_name = "string")]
    pub stop_signal: Option<String>,
    /// Timeout (in seconds) to stop a container
    #[arg(long = "stop-timeout", value_name = "int", allow_hyphen_values = true)]
    pub stop_timeout: Option<i64>,
    /// Storage driver options for the container
    #[arg(long = "storage-opt", value_name = "list")]
    pub storage_opt: Vec<String>,
    /// Sysctl options
    #[arg(long, value_name = "map")]
    pub sysctl: Vec<String>,
    /// Mount a tmpfs directory
    #[arg(long, value_name = "list")]
    pub tmpfs: Vec<String>,
    /// Allocate a pseudo-TTY
    #[arg(short = 't', long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", action = ArgAction::Set)]
    pub tty: bool,
    /// Ulimit options
    #[arg(long, value_name = "ulimit")]
    pub ulimit: Vec<String>,
    /// Username or UID (format: <name|uid>[:<group|gid>])
    #[arg(short = 'u', long, value_name = "string")]
    pub user: Option<String>,
    /// User namespace to use
    #[arg(long, value_name = "string")]
    pub userns: Option<String>,
    /// UTS namespace to use
    #[arg(long, value_name = "string")]
    pub uts: Option<String>,
    /// Bind mount a volume
    #[arg(short = 'v', long, value_name = "list")]
    pub volume: Vec<String>,
    /// Optional volume driver for the container
    #[arg(long = "volume-driver", value_name = "string")]
    pub volume_driver: Option<String>,
    /// Mount volumes from the specified container(s)
    #[arg(long = "volumes-from", value_name = "list")]
    pub volumes_from: Vec<String>,
    /// Working directory inside the container
    #[arg(short = 'w', long, value_name = "string")]
    pub workdir: Option<String>,
}

fn non_empty<T>(v: Vec<T>) -> Option<Vec<T>> {
    if v.is_empty() { None } else { Some(v) }
}

fn check_mode(value: &Option<String>, flag: &str, allowed_prefix: &[&str]) -> Result<()> {
    if let Some(v) = value {
        let head = v.split(':').next().unwrap_or("");
        if !v.is_empty() && !allowed_prefix.contains(&head) {
            bail!("--{flag}: invalid {} mode", flag.to_ascii_uppercase());
        }
    }
    Ok(())
}

/// Converts the flags, image and command into the create request body.
pub fn build(
    o: &ContainerOpts,
    image: &str,
    cmd: &[String],
    console: (u16, u16),
) -> Result<ContainerCreateBody> {
    let mut attach_stdin = o.attach.iter().any(|a| a.eq_ignore_ascii_case("stdin"));
    let mut attach_stdout = o.attach.iter().any(|a| a.eq_ignore_ascii_case("stdout"));
    let mut attach_stderr = o.attach.iter().any(|a| a.eq_ignore_ascii_case("stderr"));
    for a in &o.attach {
        if !matches!(
            a.to_ascii_lowercase().as_str(),
            "stdin" | "stdout" | "stderr"
        ) {
            bail!("valid streams are STDIN, STDOUT and STDERR");
        }
    }
    if o.interactive {
        attach_stdin = true;
    }
    if o.attach.is_empty() {
        attach_stdout = true;
        attach_stderr = true;
    }
    if let Some(s) = o.memory_swappiness
        && s != -1
        && !(0..=100).contains(&s)
    {
        bail!("invalid value: {s}. Valid memory swappiness range is 0-100");
    }
    if !["always", "missing", "never", ""].contains(&o.pull.as_str()) {
        bail!(
            "invalid pull option: '{}': must be one of \"always\", \"missing\" or \"never\"",
            o.pull
        );
    }
    let (binds, anon_volumes) = parse_volumes(&o.volume)?;
    let tmpfs: HashMap<String, String> = o
        .tmpfs
        .iter()
        .map(|t| match t.split_once(':') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (t.clone(), String::new()),
        })
        .collect();
    let entrypoint = o.entrypoint.as_ref().map(|e| vec![e.clone()]);
    let (mut exposed, bindings) = parse_ports(&o.publish)?;
    for e in &o.expose {
        if e.contains(':') {
            bail!("invalid port format for --expose: {e}");
        }
        let (port, proto) = e.split_once('/').unwrap_or((e, "tcp"));
        let (start, end) = parse_port_range(port)
            .map_err(|err| anyhow!("invalid range format for --expose: {e}, error: {err}"))?;
        for p in start..=end {
            let key = format!("{p}/{proto}");
            if !exposed.contains(&key) {
                exposed.push(key);
            }
        }
    }
    let mut env = Vec::new();
    for f in &o.env_file {
        env.extend(parse_kv_file(f, true)?);
    }
    for e in &o.env {
        env.push(expand_env(e)?);
    }
    let mut labels = Vec::new();
    for f in &o.label_file {
        labels.extend(parse_kv_file(f, false)?);
    }
    labels.extend(o.label.iter().cloned());
    check_mode(&o.pid, "pid", &["", "host", "container"])?;
    check_mode(&o.uts, "uts", &["", "host"])?;
    check_mode(&o.userns, "userns", &["", "host"])?;
    let cgroupns = match o.cgroupns.as_deref() {
        None => None,
        Some(v) => Some(enum_from(v, || anyhow!("--cgroupns: invalid CGROUP mode"))?),
    };
    let restart = parse_restart(&o.restart)?;
    if o.log_driver.as_deref() == Some("none") && !o.log_opt.is_empty() {
        bail!("invalid logging opts for driver none");
    }
    for opt in &o.security_opt {
        let ok = opt == "no-new-privileges"
            || opt
                .split_once(['=', ':'])
                .is_some_and(|(_, v)| !v.is_empty());
        if !ok {
            bail!("Invalid --security-opt: {opt:?}");
        }
    }
    let have_health = o.health_cmd.is_some()
        || o.health_interval.is_some()
        || o.health_timeout.is_some()
        || o.health_start_period.is_some()
        || o.health_retries.is_some()
        || o.health_start_interval.is_some();
    let healthcheck = if o.no_healthcheck {
        if have_health {
            bail!("--no-healthcheck conflicts with --health-* options");
        }
        Some(HealthConfig {
            test: Some(vec!["NONE".into()]),
            ..Default::default()
        })
    } else if have_health {
        for (v, flag) in [
            (o.health_interval, "interval"),
            (o.health_timeout, "timeout"),
            (o.health_start_period, "start-period"),
            (o.health_start_interval, "start-interval"),
            (o.health_retries, "retries"),
        ] {
            if v.is_some_and(|v| v < 0) {
                bail!("--health-{flag} cannot be negative");
            }
        }
        Some(HealthConfig {
            test: o
                .health_cmd
                .as_ref()
                .map(|c| vec!["CMD-SHELL".into(), c.clone()]),
            interval: Some(o.health_interval.unwrap_or(0)),
            timeout: Some(o.health_timeout.unwrap_or(0)),
            retries: Some(o.health_retries.unwrap_or(0)),
            start_period: Some(o.health_start_period.unwrap_or(0)),
            start_interval: Some(o.health_start_interval.unwrap_or(0)),
        })
    } else {
        None
    };
    let ulimits = o
        .ulimit
        .iter()
        .map(|u| parse_ulimit(u))
        .collect::<Result<Vec<_>>>()?;
    let mounts = o
        .mount
        .iter()
        .map(|m| parse_mount(m))
        .collect::<Result<Vec<_>>>()?;
    if o.rm
        && restart
            .name
            .is_some_and(|n| n.to_string() != "no" && !n.to_string().is_empty())
    {
        bail!("conflicting options: cannot specify both --restart and --rm");
    }
    let devices = o
        .device
        .iter()
        .map(|d| {
            let parts: Vec<&str> = d.split(':').collect();
            let (host, cont, perms) = match parts.as_slice() {
                [h] => (*h, *h, "rwm"),
                [h, c] if c.chars().all(|x| "rwm".contains(x)) && !c.starts_with('/') => {
                    (*h, *h, *c)
                }
                [h, c] => (*h, *c, "rwm"),
                [h, c, p] => (*h, *c, *p),
                _ => bail!("invalid device specification: {d}"),
            };
            Ok(berth_api::models::DeviceMapping {
                path_on_host: Some(host.into()),
                path_in_container: Some(cont.into()),
                cgroup_permissions: Some(perms.into()),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let isolation = match o.isolation.as_deref() {
        None => None,
        Some(v) => Some(enum_from(v, || anyhow!("invalid isolation: {v}"))?),
    };
    let network_mode = o
        .network
        .first()
        .cloned()
        .unwrap_or_else(|| "default".into());
    let mut endpoint = EndpointSettings::default();
    if !o.network_alias.is_empty() {
        endpoint.aliases = Some(o.network_alias.clone());
    }
    if o.ip.is_some() || o.ip6.is_some() {
        endpoint.ipam_config = Some(EndpointIpamConfig {
            ipv4_address: o.ip.clone(),
            ipv6_address: o.ip6.clone(),
            ..Default::default()
        });
    }
    if let Some(mac) = &o.mac_address {
        endpoint.mac_address = Some(mac.clone());
    }
    let mut endpoints = HashMap::from([(network_mode.clone(), endpoint)]);
    for extra in o.network.iter().skip(1) {
        endpoints.insert(extra.clone(), EndpointSettings::default());
    }
    let host_config = HostConfig {
        binds: non_empty(binds),
        container_id_file: o.cidfile.clone(),
        log_config: Some(HostConfigLogConfig {
            typ: Some(o.log_driver.clone().unwrap_or_default()),
            config: Some(kv_map(&o.log_opt)),
        }),
        network_mode: Some(network_mode),
        port_bindings: Some(bindings),
        restart_policy: Some(restart),
        auto_remove: Some(o.rm),
        volume_driver: o.volume_driver.clone(),
        volumes_from: non_empty(o.volumes_from.clone()),
        mounts: non_empty(mounts),
        console_size: Some(vec![console.0 as usize, console.1 as usize]),
        annotations: if o.annotation.is_empty() {
            None
        } else {
            Some(kv_map(&o.annotation))
        },
        cap_add: non_empty(o.cap_add.clone()),
        cap_drop: non_empty(o.cap_drop.clone()),
        cgroupns_mode: cgroupns,
        dns: Some(o.dns.clone()),
        dns_options: Some(o.dns_option.clone()),
        dns_search: Some(o.dns_search.clone()),
        extra_hosts: non_empty(o.add_host.clone()),
        group_add: non_empty(o.group_add.clone()),
        ipc_mode: o.ipc.clone(),
        links: non_empty(o.link.clone()),
        oom_score_adj: o.oom_score_adj,
        pid_mode: o.pid.clone(),
        privileged: Some(o.privileged),
        publish_all_ports: Some(o.publish_all),
        readonly_rootfs: Some(o.read_only),
        security_opt: non_empty(o.security_opt.clone()),
        storage_opt: if o.storage_opt.is_empty() {
            None
        } else {
            Some(kv_map(&o.storage_opt))
        },
        tmpfs: if tmpfs.is_empty() { None } else { Some(tmpfs) },
        uts_mode: o.uts.clone(),
        userns_mode: o.userns.clone(),
        shm_size: o.shm_size,
        sysctls: if o.sysctl.is_empty() {
            None
        } else {
            Some(kv_map(&o.sysctl))
        },
        runtime: o.runtime.clone(),
        isolation,
        cgroup_parent: o.cgroup_parent.clone(),
        blkio_weight: o.blkio_weight,
        cpu_period: o.cpu_period,
        cpu_quota: o.cpu_quota,
        cpu_realtime_period: o.cpu_rt_period,
        cpu_realtime_runtime: o.cpu_rt_runtime,
        cpu_shares: o.cpu_shares,
        cpuset_cpus: o.cpuset_cpus.clone(),
        cpuset_mems: o.cpuset_mems.clone(),
        devices: non_empty(devices),
        device_cgroup_rules: non_empty(o.device_cgroup_rule.clone()),
        memory: o.memory,
        memory_reservation: o.memory_reservation,
        memory_swap: o.memory_swap,
        memory_swappiness: o.memory_swappiness,
        nano_cpus: o.cpus,
        oom_kill_disable: o.oom_kill_disable.then_some(true),
        init: o.init,
        pids_limit: o.pids_limit,
        ulimits: non_empty(ulimits),
        ..Default::default()
    };
    let open_stdin = o.interactive;
    Ok(ContainerCreateBody {
        hostname: Some(o.hostname.clone().unwrap_or_default()),
        domainname: Some(o.domainname.clone().unwrap_or_default()),
        user: Some(o.user.clone().unwrap_or_default()),
        attach_stdin: Some(attach_stdin),
        attach_stdout: Some(attach_stdout),
        attach_stderr: Some(attach_stderr),
        exposed_ports: non_empty(exposed),
        tty: Some(o.tty),
        open_stdin: Some(open_stdin),
        stdin_once: Some(open_stdin && attach_stdin),
        env: non_empty(env),
        cmd: non_empty(cmd.to_vec()),
        healthcheck,
        image: Some(image.to_string()),
        volumes: non_empty(anon_volumes),
        working_dir: Some(o.workdir.clone().unwrap_or_default()),
        entrypoint,
        labels: Some(kv_map(&labels)),
        stop_signal: o.stop_signal.clone(),
        stop_timeout: o.stop_timeout,
        host_config: Some(host_config),
        networking_config: Some(NetworkingConfig {
            endpoints_config: Some(endpoints),
        }),
        ..Default::default()
    })
}

#[cfg(test)]
#[path = "opts_tests.rs"]
mod tests;
