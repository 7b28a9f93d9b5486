//! `berth ps`: the container list with docker's table, `--format` fields and `-q`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use anyhow::Result;
use clap::Args;
use gotmpl::Value;
use serde::Deserialize;

use super::{Ctx, de_null, docker_config_string, parse_filters, print_out};
use crate::client::query;
use crate::output::{ellipsis, human_size_prec, short_id, since, write_list};
use crate::reference::Reference;
use crate::template::{label_func, label_header_func, map_of, s};
use crate::timefmt::go_time_string;

const DEFAULT_FORMAT: &str =
    "table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}\t{{.Names}}";

/// `berth ps`
#[derive(Args, Debug)]
pub struct PsArgs {
    /// Show all containers (default shows just running)
    #[arg(short = 'a', long)]
    all: bool,
    /// Filter output based on conditions provided
    #[arg(short = 'f', long, value_name = "filter")]
    filter: Vec<String>,
    /// Format output using a custom template
    #[arg(long, value_name = "string")]
    format: Option<String>,
    /// Show n last created containers (includes all states)
    #[arg(short = 'n', long, value_name = "int", default_value_t = -1, allow_hyphen_values = true)]
    last: i64,
    /// Show the latest created container (includes all states)
    #[arg(short = 'l', long)]
    latest: bool,
    /// Don't truncate output
    #[arg(long = "no-trunc")]
    no_trunc: bool,
    /// Only display container IDs
    #[arg(short = 'q', long)]
    quiet: bool,
    /// Display total file sizes
    #[arg(short = 's', long)]
    size: bool,
}

/// A container list entry (`GET /containers/json`), tolerant of missing and null fields.
#[derive(Debug, Default, Deserialize)]
pub struct Summary {
    #[serde(rename = "Id", default, deserialize_with = "de_null")]
    id: String,
    #[serde(rename = "Names", default, deserialize_with = "de_null")]
    names: Vec<String>,
    #[serde(rename = "Image", default, deserialize_with = "de_null")]
    image: String,
    #[serde(rename = "ImageID", default, deserialize_with = "de_null")]
    image_id: String,
    #[serde(rename = "Command", default, deserialize_with = "de_null")]
    command: String,
    #[serde(rename = "Created", default, deserialize_with = "de_null")]
    created: i64,
    #[serde(rename = "Ports", default, deserialize_with = "de_null")]
    ports: Vec<Port>,
    #[serde(rename = "SizeRw", default, deserialize_with = "de_null")]
    size_rw: i64,
    #[serde(rename = "SizeRootFs", default, deserialize_with = "de_null")]
    size_root_fs: i64,
    #[serde(rename = "Labels", default, deserialize_with = "de_null")]
    labels: HashMap<String, String>,
    #[serde(rename = "State", default, deserialize_with = "de_null")]
    state: String,
    #[serde(rename = "Status", default, deserialize_with = "de_null")]
    status: String,
    #[serde(rename = "Mounts", default, deserialize_with = "de_null")]
    mounts: Vec<MountPoint>,
    #[serde(rename = "NetworkSettings", default, deserialize_with = "de_null")]
    network_settings: NetworkSettings,
}

/// A published or exposed port.
#[derive(Debug, Default, Deserialize, Clone)]
pub struct Port {
    #[serde(rename = "IP", default, deserialize_with = "de_null")]
    ip: String,
    #[serde(rename = "PrivatePort", default)]
    private_port: u16,
    #[serde(rename = "PublicPort", default)]
    public_port: u16,
    #[serde(rename = "Type", default, deserialize_with = "de_null")]
    typ: String,
}

#[derive(Debug, Default, Deserialize)]
struct MountPoint {
    #[serde(rename = "Name", default, deserialize_with = "de_null")]
    name: String,
    #[serde(rename = "Source", default, deserialize_with = "de_null")]
    source: String,
    #[serde(rename = "Driver", default, deserialize_with = "de_null")]
    driver: String,
}

#[derive(Debug, Default, Deserialize)]
struct NetworkSettings {
    #[serde(rename = "Networks", default, deserialize_with = "de_null")]
    networks: BTreeMap<String, serde_json::Value>,
}

fn join_host_port(ip: &str, port: &str) -> String {
    if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    }
}

/// docker's `DisplayablePorts`: groups consecutive ports, then lists host mappings.
pub fn displayable_ports(ports: &[Port]) -> String {
    let mut ports = ports.to_vec();
    ports.sort_by(|a, b| {
        (a.private_port, &a.ip, a.public_port, &a.typ).cmp(&(
            b.private_port,
            &b.ip,
            b.public_port,
            &b.typ,
        ))
    });
    let mut groups: HashMap<String, (u16, u16)> = HashMap::new();
    let mut order: Vec<String> = Vec::new();
    let mut result: Vec<String> = Vec::new();
    let mut host_mappings: Vec<String> = Vec::new();
    let form = |key: &str, first: u16, last: u16| -> String {
        let parts: Vec<&str> = key.split('/').collect();
        let (ip, typ) = if parts.len() > 1 {
            (parts[0], parts[1])
        } else {
            ("", parts[0])
        };
        let mut group = first.to_string();
        if first != last {
            group = format!("{group}-{last}");
        }
        if !ip.is_empty() {
            group = format!("{}->{group}", join_host_port(ip, &group));
        }
        format!("{group}/{typ}")
    };
    for p in &ports {
        let current = p.private_port;
        let mut key = p.typ.clone();
        if !p.ip.is_empty() {
            if p.public_port != current {
                host_mappings.push(format!(
                    "{}->{}/{}",
                    join_host_port(&p.ip, &p.public_port.to_string()),
                    p.private_port,
                    p.typ
                ));
                continue;
            }
            key = format!("{}/{}", p.ip, p.typ);
        }
        match groups.get_mut(&key) {
            None => {
                groups.insert(key.clone(), (current, current));
                order.push(key);
            }
            Some(g) if current == g.1.wrapping_add(1) => g.1 = current,
            Some(g) => {
                result.push(form(&key, g.0, g.1));
                *g = (current, current);
            }
        }
    }
    for key in &order {
        let g = groups[key];
        result.push(form(key, g.0, g.1));
    }
    result.extend(host_mappings);
    result.join(", ")
}

/// Go's `strconv.Quote`.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn image_column(c: &Summary, trunc: bool) -> String {
    if c.image.is_empty() {
        return "<no image>".into();
    }
    if trunc {
        let short = short_id(&c.image_id);
        if !short.is_empty() && short == short_id(&c.image) {
            return short.to_string();
        }
        if let Ok(mut r) = Reference::parse(&c.image) {
            r.digest = None;
            return r.familiar_string();
        }
    }
    c.image.clone()
}

/// Which row fields a format uses; fields it never mentions are not computed.
pub struct Wanted<'a> {
    format: &'a str,
    all: bool,
}

impl<'a> Wanted<'a> {
    /// Field selection for a format (`{{json .}}`, `{{.}}` and variables need every field).
    pub fn for_format(format: &'a str) -> Wanted<'a> {
        let all = format.contains("json")
            || format.contains("{{.}}")
            || format.contains(" .}}")
            || format.contains('$');
        Wanted { format, all }
    }

    fn has(&self, field: &str) -> bool {
        self.all || self.format.contains(field)
    }
}

/// The template row for one container (docker's `ContainerContext` fields).
pub fn row(c: &Summary, trunc: bool, wanted: &Wanted<'_>) -> Value {
    let mut fields: Vec<(&str, Value)> = Vec::with_capacity(16);
    let mut add = |name: &'static str, f: &dyn Fn() -> Value| {
        if wanted.has(name) {
            fields.push((name, f()));
        }
    };
    add("ID", &|| s(if trunc { short_id(&c.id) } else { &c.id }));
    add("Names", &|| {
        let names: Vec<&str> = c
            .names
            .iter()
            .map(|n| n.strip_prefix('/').unwrap_or(n))
            .collect();
        s(if trunc {
            names
                .iter()
                .find(|n| !n.contains('/'))
                .map(|n| n.to_string())
                .unwrap_or_else(|| names.join(","))
        } else {
            names.join(",")
        })
    });
    add("Image", &|| s(image_column(c, trunc)));
    add("Command", &|| {
        s(go_quote(&if trunc {
            ellipsis(&c.command, 20)
        } else {
            c.command.clone()
        }))
    });
    add("CreatedAt", &|| s(go_time_string(c.created)));
    add("RunningFor", &|| s(since(c.created)));
    add("Ports", &|| s(displayable_ports(&c.ports)));
    add("State", &|| s(&c.state));
    add("Status", &|| s(&c.status));
    add("Size", &|| {
        let srw = human_size_prec(c.size_rw as f64, 3);
        s(if c.size_root_fs > 0 {
            format!(
                "{srw} (virtual {})",
                human_size_prec(c.size_root_fs as f64, 3)
            )
        } else {
            srw
        })
    });
    add("Labels", &|| {
        let mut labels: Vec<String> = c.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        labels.sort();
        s(labels.join(","))
    });
    add("Mounts", &|| {
        let mounts: Vec<String> = c
            .mounts
            .iter()
            .map(|m| {
                let name = if m.name.is_empty() {
                    &m.source
                } else {
                    &m.name
                };
                if trunc {
                    ellipsis(name, 15)
                } else {
                    name.clone()
                }
            })
            .collect();
        s(mounts.join(","))
    });
    add("LocalVolumes", &|| {
        s(c.mounts
            .iter()
            .filter(|m| m.driver == "local")
            .count()
            .to_string())
    });
    add("Networks", &|| {
        let networks: Vec<&str> = c
            .network_settings
            .networks
            .keys()
            .map(String::as_str)
            .collect();
        s(networks.join(","))
    });
    add("Platform", &|| Value::Nil);
    add("Label", &|| {
        let label_map: BTreeMap<String, String> = c
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        label_func(Arc::new(label_map))
    });
    map_of(fields)
}

/// The table header for container rows.
pub fn header() -> Value {
    map_of([
        ("ID", s("CONTAINER ID")),
        ("Names", s("NAMES")),
        ("Image", s("IMAGE")),
        ("Command", s("COMMAND")),
        ("CreatedAt", s("CREATED AT")),
        ("RunningFor", s("CREATED")),
        ("Ports", s("PORTS")),
        ("State", s("STATE")),
        ("Status", s("STATUS")),
        ("Size", s("SIZE")),
        ("Labels", s("LABELS")),
        ("Mounts", s("MOUNTS")),
        ("LocalVolumes", s("LOCAL VOLUMES")),
        ("Networks", s("NETWORKS")),
        ("Platform", s("PLATFORM")),
        ("Label", label_header_func()),
    ])
}

/// Picks the effective format (docker's `NewContainerFormat`).
fn effective_format(format: &str, quiet: bool, size: bool) -> String {
    match format {
        "" | "table" if quiet => "{{.ID}}".into(),
        "" | "table" => {
            if size {
                format!("{DEFAULT_FORMAT}\t{{{{.Size}}}}")
            } else {
                DEFAULT_FORMAT.into()
            }
        }
        _ if quiet => "{{.ID}}".into(),
        other => other.into(),
    }
}

/// `berth ps`.
pub async fn ps(ctx: &Ctx, a: PsArgs) -> Result<()> {
    let format = match &a.format {
        Some(f) => {
            if a.quiet {
                eprintln!(
                    "WARNING: Ignoring custom format, because both --format and --quiet are set."
                );
            }
            f.clone()
        }
        None => docker_config_string(ctx, "psFormat").unwrap_or_default(),
    };
    let size = a.size || (!a.quiet && format.contains(".Size"));
    let filters = parse_filters(&a.filter)?;
    let mut q = Vec::new();
    if a.all {
        q.push(("all", "1".to_string()));
    }
    let limit = if a.latest && a.last == -1 { 1 } else { a.last };
    if limit > 0 {
        q.push(("limit", limit.to_string()));
    }
    if size {
        q.push(("size", "1".to_string()));
    }
    if !filters.is_empty() {
        q.push(("filters", filters.to_json()));
    }
    let list: Vec<Summary> = ctx
        .client
        .get_json(&format!("/containers/json{}", query(&q)))
        .await?;
    let format = effective_format(&format, a.quiet, size);
    let trunc = !a.no_trunc;
    let mut out = Vec::with_capacity(list.len() * 128);
    let wanted = Wanted::for_format(&format);
    write_list(
        &mut out,
        &format,
        &header(),
        list.iter().map(|c| row(c, trunc, &wanted)),
    )?;
    print_out(&out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Summary {
        serde_json::from_value(serde_json::json!({
            "Id": "9e4efed89a7bb87fa2e8939e700bd07f881c842e16b4b2646686d9c060fd14b3",
            "Names": ["/web"], "Image": "alpine", "ImageID": "sha256:aaaa",
            "Command": "sleep 1000", "Created": crate::timefmt::now_unix() - 13,
            "Ports": [{"IP": "0.0.0.0", "PrivatePort": 80, "PublicPort": 8080, "Type": "tcp"}],
            "Labels": {"x": "y", "a": "b"}, "State": "running", "Status": "Up 2 seconds",
            "Mounts": null, "NetworkSettings": {"Networks": {"bridge": {}}}
        }))
        .unwrap()
    }

    #[test]
    fn default_table_matches_docker() {
        let mut out = Vec::new();
        write_list(
            &mut out,
            &effective_format("", false, false),
            &header(),
            [row(
                &sample(),
                true,
                &Wanted {
                    format: "",
                    all: true,
                },
            )],
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "CONTAINER ID   IMAGE     COMMAND        CREATED          STATUS         PORTS                  NAMES\n\
             9e4efed89a7b   alpine    \"sleep 1000\"   13 seconds ago   Up 2 seconds   0.0.0.0:8080->80/tcp   web\n"
        );
    }

    #[test]
    fn custom_formats() {
        let mut out = Vec::new();
        write_list(
            &mut out,
            "{{.ID}}\\t{{.Names}}",
            &header(),
            [row(
                &sample(),
                true,
                &Wanted {
                    format: "",
                    all: true,
                },
            )],
        )
        .unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "9e4efed89a7b\tweb\n");
        let mut out = Vec::new();
        write_list(
            &mut out,
            "table {{.Names}}\t{{.Label \"x\"}}\t{{.Labels}}",
            &header(),
            [row(
                &sample(),
                true,
                &Wanted {
                    format: "",
                    all: true,
                },
            )],
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "NAMES     x         LABELS\nweb       y         a=b,x=y\n"
        );
        let mut out = Vec::new();
        write_list(
            &mut out,
            "{{json .}}",
            &header(),
            [row(
                &sample(),
                false,
                &Wanted {
                    format: "",
                    all: true,
                },
            )],
        )
        .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["Names"], "web");
        assert_eq!(v["Networks"], "bridge");
        assert_eq!(v["Size"], "0B");
        assert!(v.get("Label").is_none());
        assert!(v["Platform"].is_null());
        assert_eq!(effective_format("{{.Names}}", true, false), "{{.ID}}");
        assert!(effective_format("", false, true).ends_with("\t{{.Size}}"));
    }

    #[test]
    fn empty_table_has_only_the_header() {
        let mut out = Vec::new();
        write_list(&mut out, DEFAULT_FORMAT, &header(), Vec::new()).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "CONTAINER ID   IMAGE     COMMAND   CREATED   STATUS    PORTS     NAMES\n"
        );
    }

    #[test]
    fn ports_display_like_docker() {
        let p = |ip: &str, private: u16, public: u16, typ: &str| Port {
            ip: ip.into(),
            private_port: private,
            public_port: public,
            typ: typ.into(),
        };
        assert_eq!(displayable_ports(&[p("", 9988, 0, "tcp")]), "9988/tcp");
        assert_eq!(
            displayable_ports(&[
                p("", 80, 0, "tcp"),
                p("", 81, 0, "tcp"),
                p("", 82, 0, "tcp")
            ]),
            "80-82/tcp"
        );
        assert_eq!(
            displayable_ports(&[p("0.0.0.0", 9090, 80, "tcp"), p("", 9988, 0, "tcp")]),
            "9988/tcp, 0.0.0.0:80->9090/tcp"
        );
        assert_eq!(
            displayable_ports(&[p("0.0.0.0", 80, 80, "tcp")]),
            "0.0.0.0:80->80/tcp"
        );
        assert_eq!(
            displayable_ports(&[p("::", 80, 8080, "tcp")]),
            "[::]:8080->80/tcp"
        );
    }

    #[tokio::test]
    async fn list_query_carries_flags_and_filters() {
        use super::super::fake_daemon::{FakeDaemon, Script};
        use clap::Parser;
        let script = Script::new(Vec::new(), 0);
        let fake = FakeDaemon::start(script.clone());
        let cfg = tempfile::tempdir().unwrap();
        let ctx = fake.ctx(cfg.path());
        let cli = crate::Cli::try_parse_from([
            "berth",
            "ps",
            "-a",
            "-n",
            "3",
            "--filter",
            "status=running",
            "--format",
            "{{.ID}} {{.Size}}",
        ])
        .unwrap();
        super::super::dispatch(&ctx, cli.command.unwrap())
            .await
            .unwrap();
        assert_eq!(
            script.requests(),
            vec![
                "GET /v1.44/containers/json?all=1&limit=3&size=1&filters=%7B%22status%22%3A%7B%22running%22%3Atrue%7D%7D"
            ]
        );
    }

    #[test]
    fn quoting_like_go() {
        assert_eq!(go_quote("sh -c \"echo\"\n"), "\"sh -c \\\"echo\\\"\\n\"");
    }
}
