//! Flag value parsers shared by `run`, `create` and `exec`, each mirroring the docker CLI or
//! go-units function named in its doc comment.

use std::collections::HashMap;

use anyhow::{Context, Result, anyhow, bail};
use berth_api::models::{
    Mount, MountBindOptions, MountTmpfsOptions, MountVolumeOptions, PortBinding, ResourcesUlimits,
    RestartPolicy,
};
use serde::de::DeserializeOwned;

use crate::timefmt::parse_go_duration;

/// go-units `RAMInBytes`: `512m` → 536870912; units k, m, g, t, p (binary), optional `b`.
pub fn parse_ram(s: &str) -> Result<i64, String> {
    let (num, suffix) = match s.split_once(' ') {
        Some((n, sfx)) => (n, sfx),
        None => {
            let sep = s
                .rfind(|c: char| c.is_ascii_digit() || c == '.')
                .ok_or(format!("invalid size: '{s}'"))?;
            (&s[..=sep], &s[sep + 1..])
        }
    };
    let value: f64 = num.parse().map_err(|_| format!("invalid size: '{s}'"))?;
    if value < 0.0 {
        return Err(format!("invalid size: '{s}'"));
    }
    let sfx = suffix.to_ascii_lowercase();
    if sfx.is_empty() || sfx == "b" {
        return Ok(value as i64);
    }
    let bad = || format!("invalid suffix: '{sfx}'");
    if sfx.len() > 3 {
        return Err(bad());
    }
    let mult: f64 = match sfx.as_bytes()[0] {
        b'k' => 1024.0,
        b'm' => 1024f64.powi(2),
        b'g' => 1024f64.powi(3),
        b't' => 1024f64.powi(4),
        b'p' => 1024f64.powi(5),
        _ => return Err(bad()),
    };
    match sfx.len() {
        2 if &sfx[1..] != "b" => return Err(bad()),
        3 if &sfx[1..] != "ib" => return Err(bad()),
        _ => {}
    }
    Ok((value * mult) as i64)
}

/// `--memory-swap`: `-1` (unlimited) or a RAM size.
pub fn parse_mem_swap(s: &str) -> Result<i64, String> {
    if s == "-1" { Ok(-1) } else { parse_ram(s) }
}

/// `--cpus 1.5` → 1500000000 NanoCPUs, rejecting more than nine decimals like docker.
pub fn parse_nano_cpus(s: &str) -> Result<i64, String> {
    let bad = || format!("failed to parse {s} as a rational number");
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if (int.is_empty() && frac.is_empty())
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(bad());
    }
    let frac_trim = frac.trim_end_matches('0');
    if frac_trim.len() > 9 {
        return Err("value is too precise".into());
    }
    let whole: i64 = if int.is_empty() {
        0
    } else {
        int.parse().map_err(|_| bad())?
    };
    let nanos: i64 = if frac_trim.is_empty() {
        0
    } else {
        format!("{frac_trim:0<9}").parse().map_err(|_| bad())?
    };
    whole
        .checked_mul(1_000_000_000)
        .and_then(|w| w.checked_add(nanos))
        .ok_or_else(bad)
}

/// A Go duration flag value in nanoseconds.
pub fn parse_duration_ns(s: &str) -> Result<i64, String> {
    parse_go_duration(s).ok_or_else(|| format!("time: invalid duration \"{s}\""))
}

/// Converts a flag string into an API enum through its serde name.
pub fn enum_from<T: DeserializeOwned>(
    value: &str,
    err: impl FnOnce() -> anyhow::Error,
) -> Result<T> {
    serde_json::from_value(serde_json::Value::String(value.to_string())).map_err(|_| err())
}

/// docker's `ParseRestartPolicy` plus the daemon's name check.
pub fn parse_restart(policy: &str) -> Result<RestartPolicy> {
    if policy.is_empty() {
        return Ok(RestartPolicy::default());
    }
    let (name, count) = match policy.split_once(':') {
        Some(("", _)) => bail!("invalid restart policy format: no policy provided before colon"),
        Some((n, c)) => (n, Some(c)),
        None => (policy, None),
    };
    let max = match count {
        Some(c) if !c.is_empty() => Some(c.parse::<i64>().map_err(|_| {
            anyhow!("invalid restart policy format: maximum retry count must be an integer")
        })?),
        _ => None,
    };
    let name = enum_from(name, || {
        anyhow!(
            "invalid restart policy: unknown policy '{name}'; use one of 'no', 'always', 'on-failure', or 'unless-stopped'"
        )
    })?;
    Ok(RestartPolicy {
        name: Some(name),
        maximum_retry_count: Some(max.unwrap_or(0)),
    })
}

/// go-units `ParseUlimit`: `nofile=1024:2048`, `nproc=512`.
pub fn parse_ulimit(spec: &str) -> Result<ResourcesUlimits> {
    const NAMES: [&str; 16] = [
        "core",
        "cpu",
        "data",
        "fsize",
        "locks",
        "memlock",
        "msgqueue",
        "nice",
        "nofile",
        "nproc",
        "rss",
        "rtprio",
        "rttime",
        "sigpending",
        "stack",
        "as",
    ];
    let (name, val) = spec
        .split_once('=')
        .ok_or_else(|| anyhow!("invalid ulimit argument: {spec}"))?;
    if !NAMES.contains(&name) {
        bail!("invalid ulimit type: {name}");
    }
    let num = |s: &str| {
        s.parse::<i64>()
            .map_err(|_| anyhow!("invalid ulimit value: {s}"))
    };
    let (soft, hard) = match val.split_once(':') {
        Some((s, h)) => (num(s)?, num(h)?),
        None => (num(val)?, num(val)?),
    };
    if hard != -1 {
        if soft == -1 {
            bail!(
                "ulimit soft limit must be less than or equal to hard limit: soft: -1 (unlimited), hard: {hard}"
            );
        }
        if soft > hard {
            bail!("ulimit soft limit must be less than or equal to hard limit: {soft} > {hard}");
        }
    }
    Ok(ResourcesUlimits {
        name: Some(name.to_string()),
        soft: Some(soft),
        hard: Some(hard),
    })
}

/// Parsed `-p`: exposed ports and bindings (`nat.ParsePortSpecs`).
pub type PortSpecs = (Vec<String>, HashMap<String, Option<Vec<PortBinding>>>);

/// `8000` or `8000-8010`.
pub fn parse_port_range(s: &str) -> Result<(u32, u32)> {
    let num = |p: &str| -> Result<u32> {
        let v: u32 = p.parse().map_err(|_| anyhow!("invalid port '{p}'"))?;
        if v > 65535 {
            bail!("value out of range (0–65535)");
        }
        Ok(v)
    };
    if s.is_empty() {
        bail!("empty string specified for ports");
    }
    match s.split_once('-') {
        Some((a, b)) if a != b => {
            let (start, end) = (num(a)?, num(b)?);
            if end < start {
                bail!("invalid port range: {s}");
            }
            Ok((start, end))
        }
        Some((a, _)) => Ok((num(a)?, num(a)?)),
        None => Ok((num(s)?, num(s)?)),
    }
}

/// Parses `-p` specs (also the long `published=,target=` syntax) into ports and bindings.
pub fn parse_ports(specs: &[String]) -> Result<PortSpecs> {
    let mut exposed: Vec<String> = Vec::new();
    let mut bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
    for raw in specs {
        let spec = if raw.contains('=') {
            let mut params: HashMap<&str, &str> = HashMap::from([("protocol", "tcp")]);
            for part in raw.split(',') {
                match part.split_once('=') {
                    Some((k, v)) if !k.is_empty() => {
                        params.insert(k, v);
                    }
                    _ => {
                        bail!("invalid publish opts format (should be name=value but got '{part}')")
                    }
                }
            }
            format!(
                "{}:{}/{}",
                params.get("published").unwrap_or(&""),
                params.get("target").unwrap_or(&""),
                params["protocol"]
            )
        } else {
            raw.clone()
        };
        let parts: Vec<&str> = spec.split(':').collect();
        let (ip, host_port, container) = match parts.len() {
            1 => (String::new(), "", parts[0]),
            2 => (String::new(), parts[0], parts[1]),
            n => (parts[..n - 2].join(":"), parts[n - 2], parts[n - 1]),
        };
        let (container_port, proto) = match container.split_once('/') {
            Some((p, proto)) => (
                p,
                if proto.is_empty() {
                    "tcp".to_string()
                } else {
                    proto.to_ascii_lowercase()
                },
            ),
            None => (container, "tcp".to_string()),
        };
        if container_port.is_empty() {
            bail!("no port specified: {spec}<empty>");
        }
        if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
            bail!("invalid proto: {proto}");
        }
        let ip = ip.trim_start_matches('[').trim_end_matches(']').to_string();
        if !ip.is_empty() && ip.parse::<std::net::IpAddr>().is_err() {
            bail!("invalid IP address: {ip}");
        }
        let (start, end) = parse_port_range(container_port)
            .map_err(|_| anyhow!("invalid containerPort: {container_port}"))?;
        let host_range = if host_port.is_empty() {
            None
        } else {
            let r = parse_port_range(host_port)
                .map_err(|_| anyhow!("invalid hostPort: {host_port}"))?;
            if end - start != r.1 - r.0 && end != start {
                bail!(
                    "invalid ranges specified for container and host Ports: {container_port} and {host_port}"
                );
            }
            Some(r)
        };
        let count = end - start + 1;
        for i in 0..count {
            let port = format!("{}/{proto}", start + i);
            let host = match host_range {
                None => String::new(),
                Some((hs, he)) if count == 1 && hs != he => format!("{hs}-{he}"),
                Some((hs, _)) => (hs + i).to_string(),
            };
            if !exposed.contains(&port) {
                exposed.push(port.clone());
            }
            let entry = bindings.entry(port).or_insert_with(|| Some(Vec::new()));
            if let Some(list) = entry {
                list.push(PortBinding {
                    host_ip: Some(ip.clone()),
                    host_port: Some(host),
                });
            }
        }
    }
    Ok((exposed, bindings))
}

/// Reads `KEY=VALUE` lines (`kvfile.Parse`); keys without `=` are looked up in the
/// environment when `lookup` is set and dropped when absent.
pub fn parse_kv_file(path: &str, lookup: bool) -> Result<Vec<String>> {
    let data = std::fs::read(path).with_context(|| format!("open {path}"))?;
    let text = String::from_utf8(data)
        .map_err(|_| anyhow!("invalid env file ({path}): invalid utf8 bytes"))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = if i == 0 {
            line.trim_start_matches('\u{feff}')
        } else {
            line
        };
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, has_value) = match line.split_once('=') {
            Some((k, _)) => (k, true),
            None => (line, false),
        };
        if key.is_empty() {
            bail!("invalid env file ({path}): no variable name on line '{line}'");
        }
        if key.contains([' ', '\t']) {
            bail!("invalid env file ({path}): variable '{key}' contains whitespaces");
        }
        if has_value {
            out.push(line.to_string());
        } else if lookup && let Ok(v) = std::env::var(line) {
            out.push(format!("{key}={v}"));
        }
    }
    Ok(out)
}

/// `-e KEY` takes the value from the local environment when set (`opts.ValidateEnv`).
pub fn expand_env(value: &str) -> Result<String> {
    let (key, has_value) = match value.split_once('=') {
        Some((k, _)) => (k, true),
        None => (value, false),
    };
    if key.is_empty() {
        bail!("invalid environment variable: {value}");
    }
    if !has_value && let Ok(v) = std::env::var(key) {
        return Ok(format!("{key}={v}"));
    }
    Ok(value.to_string())
}

/// `k=v` strings into a map (a bare `k` maps to an empty value).
pub fn kv_map(values: &[String]) -> HashMap<String, String> {
    values
        .iter()
        .map(|v| match v.split_once('=') {
            Some((k, val)) => (k.to_string(), val.to_string()),
            None => (v.to_string(), String::new()),
        })
        .collect()
}

/// Parses one `--mount` value (`type=bind,source=/a,target=/b,readonly`).
pub fn parse_mount(spec: &str) -> Result<Mount> {
    let mut m = Mount::default();
    let mut typ = "volume".to_string();
    let mut bind = MountBindOptions::default();
    let mut volume = MountVolumeOptions::default();
    let mut tmpfs = MountTmpfsOptions::default();
    let truthy = |v: Option<&str>| -> Result<bool> {
        match v {
            None | Some("1") | Some("true") | Some("True") => Ok(true),
            Some("0") | Some("false") | Some("False") => Ok(false),
            Some(other) => bail!("invalid value for boolean: {other}"),
        }
    };
    for field in spec.split(',') {
        let (key, val) = match field.split_once('=') {
            Some((k, v)) => (k.trim().to_ascii_lowercase(), Some(v.trim())),
            None => (field.trim().to_ascii_lowercase(), None),
        };
        let need =
            || val.ok_or_else(|| anyhow!("invalid field '{field}' must be a key=value pair"));
        match key.as_str() {
            "type" => typ = need()?.to_string(),
            "source" | "src" => m.source = Some(need()?.to_string()),
            "target" | "dst" | "destination" => m.target = Some(need()?.to_string()),
            "readonly" | "ro" => m.read_only = Some(truthy(val)?),
            "consistency" => m.consistency = Some(need()?.to_string()),
            "bind-propagation" => {
                let v = need()?;
                bind.propagation = Some(enum_from(v, || anyhow!("invalid bind propagation: {v}"))?);
            }
            "bind-nonrecursive" => bind.non_recursive = Some(truthy(val)?),
            "bind-create-mountpoint" | "bind-create-src" => {
                bind.create_mountpoint = Some(truthy(val)?)
            }
            "volume-nocopy" => volume.no_copy = Some(truthy(val)?),
            "volume-subpath" => volume.subpath = Some(need()?.to_string()),
            "volume-label" => {
                let (k, v) = need()?.split_once('=').unwrap_or((need()?, ""));
                volume
                    .labels
                    .get_or_insert_with(HashMap::new)
                    .insert(k.to_string(), v.to_string());
            }
            "volume-driver" => {
                volume
                    .driver_config
                    .get_or_insert_with(Default::default)
                    .name = Some(need()?.to_string());
            }
            "volume-opt" => {
                let (k, v) = need()?.split_once('=').unwrap_or((need()?, ""));
                volume
                    .driver_config
                    .get_or_insert_with(Default::default)
                    .options
                    .get_or_insert_with(HashMap::new)
                    .insert(k.to_string(), v.to_string());
            }
            "tmpfs-size" => {
                tmpfs.size_bytes =
                    Some(parse_ram(need()?).map_err(|e| anyhow!("invalid value for {key}: {e}"))?)
            }
            "tmpfs-mode" => {
                let v = need()?;
                tmpfs.mode = Some(
                    i64::from_str_radix(v, 8)
                        .map_err(|_| anyhow!("invalid value for {key}: {v}"))?,
                );
            }
            _ => bail!("unexpected key '{key}' in '{field}'"),
        }
    }
    m.typ = Some(enum_from(&typ, || anyhow!("invalid mount type: {typ}"))?);
    if m.target.is_none() {
        bail!("target is required");
    }
    match typ.as_str() {
        "bind" if bind != MountBindOptions::default() => m.bind_options = Some(bind),
        "volume" if volume != MountVolumeOptions::default() => m.volume_options = Some(volume),
        "tmpfs" if tmpfs != MountTmpfsOptions::default() => m.tmpfs_options = Some(tmpfs),
        _ => {}
    }
    Ok(m)
}

/// Splits `-v` values into binds (with a source) and anonymous volumes (target only);
/// relative `./x` sources become absolute as in the docker CLI.
pub fn parse_volumes(values: &[String]) -> Result<(Vec<String>, Vec<String>)> {
    let mut binds = Vec::new();
    let mut volumes = Vec::new();
    for v in values {
        let parts: Vec<&str> = v.split(':').collect();
        if parts.iter().any(|p| p.is_empty()) || parts.len() > 3 {
            bail!("invalid spec: {v}: empty section between colons");
        }
        if parts.len() == 1 {
            volumes.push(v.clone());
            continue;
        }
        let mut host = parts[0].to_string();
        if host.starts_with('.') {
            let cwd = std::env::current_dir().context("resolving the current directory")?;
            host = cwd.join(&host).to_string_lossy().into_owned();
            host = normalize_path(&host);
        }
        let rest = parts[1..].join(":");
        binds.push(format!("{host}:{rest}"));
    }
    Ok((binds, volumes))
}

fn normalize_path(p: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for part in p.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            x => out.push(x),
        }
    }
    format!("/{}", out.join("/"))
}
