//! System commands: version, info, events, system df, system prune and the generic inspect.

use std::collections::BTreeMap;
use std::io::Write;

use anyhow::{Result, bail};
use clap::Args;
use gotmpl::Value;
use hyper::Method;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::{Ctx, StatusError, confirm, de_null, parse_filters, print_out};
use crate::client::{self, JsonStream, enc_path, for_each_chunk, query};
use crate::output::{human_size, write_list};
use crate::template::{self, from_json, map_of, s};
use crate::timefmt::{get_timestamp, now_unix, rfc3339_nano_fixed};

/// `berth events`
#[derive(Args, Debug)]
pub struct EventsArgs {
    /// Filter output based on conditions provided
    #[arg(short = 'f', long, value_name = "filter")]
    filter: Vec<String>,
    /// Format output using a custom template
    #[arg(long, value_name = "string")]
    format: Option<String>,
    /// Show all events created since timestamp
    #[arg(long, value_name = "string")]
    since: Option<String>,
    /// Stream events until this timestamp
    #[arg(long, value_name = "string")]
    until: Option<String>,
}

/// `berth system df`
#[derive(Args, Debug)]
pub struct DfArgs {
    /// Format output using a custom template
    #[arg(long, value_name = "string")]
    format: Option<String>,
    /// Show detailed information on space usage
    #[arg(short = 'v', long)]
    verbose: bool,
}

/// `berth system prune`
#[derive(Args, Debug)]
pub struct SystemPruneArgs {
    /// Remove all unused images not just dangling ones
    #[arg(short = 'a', long)]
    all: bool,
    /// Provide filter values (e.g. "label=<key>=<value>")
    #[arg(long, value_name = "filter")]
    filter: Vec<String>,
    /// Do not prompt for confirmation
    #[arg(short = 'f', long)]
    force: bool,
    /// Prune anonymous volumes
    #[arg(long)]
    volumes: bool,
}

/// `berth inspect`
#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Format output using a custom template
    #[arg(short = 'f', long, value_name = "string")]
    format: Option<String>,
    /// Display total file sizes if the type is container
    #[arg(short = 's', long)]
    size: bool,
    /// Only inspect objects of the given type
    #[arg(long = "type", value_name = "string")]
    typ: Option<String>,
    /// NAME|ID [NAME|ID...]
    #[arg(value_name = "NAME|ID", required = true)]
    names: Vec<String>,
}

/// The default one-line rendering of an event.
fn pretty_event(ev: &serde_json::Value) -> String {
    let mut line = String::new();
    let nanos = ev["timeNano"].as_i64().unwrap_or(0);
    let secs = ev["time"].as_i64().unwrap_or(0);
    if nanos != 0 {
        line.push_str(&rfc3339_nano_fixed(nanos));
        line.push(' ');
    } else if secs != 0 {
        line.push_str(&rfc3339_nano_fixed(secs * 1_000_000_000));
        line.push(' ');
    }
    let field = |k: &str| ev[k].as_str().unwrap_or("").to_string();
    line.push_str(&format!(
        "{} {} {}",
        field("Type"),
        field("Action"),
        ev["Actor"]["ID"].as_str().unwrap_or("")
    ));
    if let Some(attrs) = ev["Actor"]["Attributes"]
        .as_object()
        .filter(|a| !a.is_empty())
    {
        let mut pairs: Vec<(&String, &serde_json::Value)> = attrs.iter().collect();
        pairs.sort_by(|a, b| a.0.cmp(b.0));
        let joined: Vec<String> = pairs
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
            .collect();
        line.push_str(&format!(" ({})", joined.join(", ")));
    }
    line.push('\n');
    line
}

/// An event re-encoded the way the Go CLI's `{{json .}}` does it: `events.Message` field
/// order, attributes sorted.
#[derive(Debug, Deserialize, Serialize)]
struct EventMessage {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    status: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    from: String,
    #[serde(rename = "Type", default)]
    typ: String,
    #[serde(rename = "Action", default)]
    action: String,
    #[serde(rename = "Actor", default)]
    actor: EventActor,
    #[serde(default)]
    scope: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    time: i64,
    #[serde(rename = "timeNano", default, skip_serializing_if = "is_zero")]
    time_nano: i64,
}

#[derive(Debug, Default, Deserialize, Serialize)]
struct EventActor {
    #[serde(rename = "ID", default)]
    id: String,
    #[serde(rename = "Attributes", default)]
    attributes: Option<BTreeMap<String, String>>,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

/// `berth events`: streams events until interrupted (or `--until`).
pub async fn events(ctx: &Ctx, a: EventsArgs) -> Result<()> {
    let format = match a.format.as_deref() {
        None | Some("") => None,
        Some("json") => Some("{{json .}}".to_string()),
        Some(f) => Some(f.to_string()),
    };
    let compiled = match &format {
        Some(f) => Some(template::compile(f, false).map_err(|e| {
            anyhow::Error::new(StatusError {
                code: 64,
                message: Some(format!("Error parsing format: {e:#}")),
            })
        })?),
        None => None,
    };
    let raw_json = format.as_deref().map(str::trim) == Some("{{json .}}");
    let filters = parse_filters(&a.filter)?;
    let now = now_unix();
    let mut q = Vec::new();
    if let Some(s) = &a.since {
        q.push(("since", get_timestamp(s, now)?));
    }
    if let Some(u) = &a.until {
        q.push(("until", get_timestamp(u, now)?));
    }
    if !filters.is_empty() {
        q.push(("filters", filters.to_json()));
    }
    let resp = ctx
        .client
        .call(Method::GET, &format!("/events{}", query(&q)))
        .await?;
    let mut decoder = JsonStream::default();
    for_each_chunk(resp, |chunk| {
        for raw in decoder.feed::<Box<RawValue>>(chunk)? {
            let line = if raw_json {
                let ev: EventMessage = serde_json::from_str(raw.get())?;
                format!("{}\n", serde_json::to_string(&ev)?)
            } else {
                let ev: serde_json::Value = serde_json::from_str(raw.get())?;
                match &compiled {
                    Some(c) => format!("{}\n", c.render(&from_json(&ev))?),
                    None => pretty_event(&ev),
                }
            };
            let mut out = std::io::stdout().lock();
            out.write_all(line.as_bytes())?;
            out.flush()?;
        }
        Ok(())
    })
    .await
}

#[derive(Deserialize, Default)]
struct DiskUsage {
    #[serde(rename = "LayersSize", default, deserialize_with = "de_null")]
    layers_size: i64,
    #[serde(rename = "Images", default, deserialize_with = "de_null")]
    images: Vec<DfImage>,
    #[serde(rename = "Containers", default, deserialize_with = "de_null")]
    containers: Vec<DfContainer>,
    #[serde(rename = "Volumes", default, deserialize_with = "de_null")]
    volumes: Vec<DfVolume>,
    #[serde(rename = "BuildCache", default, deserialize_with = "de_null")]
    build_cache: Vec<DfCache>,
}

#[derive(Deserialize, Default)]
struct DfImage {
    #[serde(rename = "Containers", default)]
    containers: i64,
    #[serde(rename = "Size", default)]
    size: i64,
    #[serde(rename = "SharedSize", default)]
    shared_size: i64,
}

#[derive(Deserialize, Default)]
struct DfContainer {
    #[serde(rename = "State", default, deserialize_with = "de_null")]
    state: String,
    #[serde(rename = "SizeRw", default, deserialize_with = "de_null")]
    size_rw: i64,
}

#[derive(Deserialize, Default)]
struct DfVolume {
    #[serde(rename = "UsageData", default, deserialize_with = "de_null")]
    usage: DfUsage,
}

#[derive(Deserialize, Default)]
struct DfUsage {
    #[serde(rename = "Size", default)]
    size: i64,
    #[serde(rename = "RefCount", default)]
    ref_count: i64,
}

#[derive(Deserialize, Default)]
struct DfCache {
    #[serde(rename = "Size", default)]
    size: i64,
    #[serde(rename = "InUse", default)]
    in_use: bool,
    #[serde(rename = "Shared", default)]
    shared: bool,
}

fn reclaim(reclaimable: i64, total: i64) -> String {
    if total > 0 {
        format!(
            "{} ({}%)",
            human_size(reclaimable as f64),
            reclaimable * 100 / total
        )
    } else {
        human_size(reclaimable as f64)
    }
}

fn df_rows(du: &DiskUsage) -> Vec<Value> {
    let row = |t: &str, total: usize, active: usize, size: String, rec: String| {
        map_of([
            ("Type", s(t)),
            ("TotalCount", s(total.to_string())),
            ("Active", s(active.to_string())),
            ("Size", s(size)),
            ("Reclaimable", s(rec)),
        ])
    };
    let used: i64 = du
        .images
        .iter()
        .filter(|i| i.containers != 0 && i.size != -1 && i.shared_size != -1)
        .map(|i| i.size - i.shared_size)
        .sum();
    let images = row(
        "Images",
        du.images.len(),
        du.images.iter().filter(|i| i.containers > 0).count(),
        human_size(du.layers_size as f64),
        reclaim(du.layers_size - used, du.layers_size),
    );
    let active = |c: &DfContainer| matches!(c.state.as_str(), "running" | "paused" | "restarting");
    let ctotal: i64 = du.containers.iter().map(|c| c.size_rw).sum();
    let creclaim: i64 = du
        .containers
        .iter()
        .filter(|c| !active(c))
        .map(|c| c.size_rw)
        .sum();
    let containers = row(
        "Containers",
        du.containers.len(),
        du.containers.iter().filter(|c| active(c)).count(),
        human_size(ctotal as f64),
        reclaim(creclaim, ctotal),
    );
    let sized = du.volumes.iter().filter(|v| v.usage.size != -1);
    let vtotal: i64 = sized.clone().map(|v| v.usage.size).sum();
    let vreclaim: i64 = sized
        .filter(|v| v.usage.ref_count == 0)
        .map(|v| v.usage.size)
        .sum();
    let volumes = row(
        "Local Volumes",
        du.volumes.len(),
        du.volumes.iter().filter(|v| v.usage.ref_count > 0).count(),
        human_size(vtotal as f64),
        reclaim(vreclaim, vtotal),
    );
    let bsize: i64 = du
        .build_cache
        .iter()
        .filter(|b| !b.shared)
        .map(|b| b.size)
        .sum();
    let in_use: i64 = du
        .build_cache
        .iter()
        .filter(|b| b.in_use && !b.shared)
        .map(|b| b.size)
        .sum();
    let cache = row(
        "Build Cache",
        du.build_cache.len(),
        du.build_cache.iter().filter(|b| b.in_use).count(),
        human_size(bsize as f64),
        human_size((bsize - in_use) as f64),
    );
    vec![images, containers, volumes, cache]
}

/// `berth system df`.
pub async fn df(ctx: &Ctx, a: DfArgs) -> Result<()> {
    if a.verbose {
        let raw = ctx.client.call_bytes(Method::GET, "/system/df").await?;
        let v: serde_json::Value = serde_json::from_slice(&raw)?;
        let out =
            super::inspect::render_list(&[bytes::Bytes::from(serde_json::to_vec(&v)?)], false);
        return print_out(out.as_bytes());
    }
    let du: DiskUsage = ctx.client.get_json("/system/df").await?;
    let format = match a.format.as_deref() {
        None | Some("") | Some("table") => {
            "table {{.Type}}\t{{.TotalCount}}\t{{.Active}}\t{{.Size}}\t{{.Reclaimable}}"
        }
        Some("json") => "{{json .}}",
        Some(f) => f,
    };
    let header = map_of([
        ("Type", s("TYPE")),
        ("TotalCount", s("TOTAL")),
        ("Active", s("ACTIVE")),
        ("Size", s("SIZE")),
        ("Reclaimable", s("RECLAIMABLE")),
    ]);
    let mut out = Vec::new();
    write_list(&mut out, format, &header, df_rows(&du))?;
    print_out(&out)
}

#[derive(Deserialize, Default)]
struct PruneReply {
    #[serde(rename = "NetworksDeleted", default, deserialize_with = "de_null")]
    networks: Vec<String>,
    #[serde(rename = "VolumesDeleted", default, deserialize_with = "de_null")]
    volumes: Vec<String>,
    #[serde(rename = "CachesDeleted", default, deserialize_with = "de_null")]
    caches: Vec<String>,
    #[serde(rename = "SpaceReclaimed", default, deserialize_with = "de_null")]
    space: u64,
}

fn listing(title: &str, items: &[String]) -> String {
    if items.is_empty() {
        return String::new();
    }
    let mut s = format!("{title}:\n");
    for i in items {
        s.push_str(i);
        s.push('\n');
    }
    s
}

/// `berth system prune`.
pub async fn prune(ctx: &Ctx, a: SystemPruneArgs) -> Result<()> {
    let filters = parse_filters(&a.filter)?;
    if a.volumes && !filters.get("until").is_empty() {
        bail!("ERROR: The \"until\" filter is not supported with \"--volumes\"");
    }
    if !a.force {
        let mut msg = String::from(
            "WARNING! This will remove:\n  - all stopped containers\n  - all networks not used by at least one container",
        );
        if a.volumes {
            msg.push_str("\n  - all anonymous volumes not used by at least one container");
        }
        msg.push_str(if a.all {
            "\n  - all images without at least one container associated to them"
        } else {
            "\n  - all dangling images"
        });
        msg.push_str(if a.all {
            "\n  - all build cache"
        } else {
            "\n  - unused build cache"
        });
        let mut shown: Vec<String> = Vec::new();
        for name in ["label", "label!", "until"] {
            shown.extend(filters.get(name).iter().map(|v| format!("{name}={v}")));
        }
        if !shown.is_empty() {
            shown.sort_by(|x, y| {
                if super::container::natural_less(x, y) {
                    std::cmp::Ordering::Less
                } else {
                    std::cmp::Ordering::Greater
                }
            });
            msg.push_str("\n\n  Items to be pruned will be filtered with:");
            for f in &shown {
                msg.push_str(&format!("\n  - {f}"));
            }
        }
        msg.push_str("\n\nAre you sure you want to continue?");
        if !confirm(&msg) {
            return Ok(());
        }
    }
    let fq = if filters.is_empty() {
        String::new()
    } else {
        query(&[("filters", filters.to_json())])
    };
    let mut out = String::new();
    let mut total: u64 = 0;
    let mut emit = |text: String, space: u64| {
        total += space;
        if !text.is_empty() {
            out.push_str(&text);
            out.push('\n');
        }
    };
    let (space, text) = super::container::prune_containers(ctx, &filters).await?;
    emit(text, space);
    let nets: PruneReply = serde_json::from_slice(
        &ctx.client
            .call_bytes(Method::POST, &format!("/networks/prune{fq}"))
            .await?,
    )?;
    emit(listing("Deleted Networks", &nets.networks), 0);
    if a.volumes {
        let vols: PruneReply = serde_json::from_slice(
            &ctx.client
                .call_bytes(Method::POST, &format!("/volumes/prune{fq}"))
                .await?,
        )?;
        let space = if vols.volumes.is_empty() {
            0
        } else {
            vols.space
        };
        emit(listing("Deleted Volumes", &vols.volumes), space);
    }
    let (space, text) = super::image::prune_images(ctx, filters.clone(), a.all).await?;
    emit(text, space);
    let mut bq = Vec::new();
    if a.all {
        bq.push(("all", "1".to_string()));
    }
    bq.push((
        "filters",
        if filters.is_empty() {
            String::new()
        } else {
            filters.to_json()
        },
    ));
    let cache: PruneReply = serde_json::from_slice(
        &ctx.client
            .call_bytes(Method::POST, &format!("/build/prune{}", query(&bq)))
            .await?,
    )?;
    emit(
        listing("Deleted build cache objects", &cache.caches),
        cache.space,
    );
    out.push_str(&format!(
        "Total reclaimed space: {}\n",
        human_size(total as f64)
    ));
    print_out(out.as_bytes())
}

/// Whether the generic inspect may try the next object type after this error.
fn skippable(err: &anyhow::Error) -> bool {
    let msg = format!("{err:#}");
    client::is_not_found(err)
        || msg.contains("not supported")
        || msg.contains("invalid reference format")
}

/// `berth inspect`: tries container, image, network, volume and plugin in turn (or only
/// `--type`).
pub async fn inspect(ctx: &Ctx, a: InspectArgs) -> Result<()> {
    const TYPES: [&str; 10] = [
        "config",
        "container",
        "image",
        "network",
        "node",
        "plugin",
        "secret",
        "service",
        "task",
        "volume",
    ];
    if let Some(t) = &a.typ {
        if t.is_empty() {
            bail!("type is empty: must be one of \"{}\"", TYPES.join("\", \""));
        }
        if !TYPES.contains(&t.as_str()) {
            bail!(
                "unknown type: {t:?}: must be one of \"{}\"",
                TYPES.join("\", \"")
            );
        }
    }
    let size = a.size;
    let typ = a.typ.clone();
    super::inspect::inspect_refs(&a.names, a.format.as_deref(), |name| {
        let typ = typ.clone();
        async move {
            let n = enc_path(&name);
            let candidates: Vec<(&str, String)> = vec![
                (
                    "container",
                    format!("/containers/{n}/json{}", if size { "?size=1" } else { "" }),
                ),
                ("image", format!("/images/{n}/json")),
                ("network", format!("/networks/{n}")),
                ("volume", format!("/volumes/{n}")),
                ("plugin", format!("/plugins/{n}/json")),
                ("service", format!("/services/{n}")),
                ("task", format!("/tasks/{n}")),
                ("node", format!("/nodes/{n}")),
                ("secret", format!("/secrets/{n}")),
                ("config", format!("/configs/{n}")),
            ];
            for (kind, path) in candidates {
                match &typ {
                    Some(t) if t != kind => continue,
                    None if matches!(kind, "service" | "task" | "node" | "secret" | "config") => {
                        continue;
                    }
                    _ => {}
                }
                match ctx.client.call_bytes(Method::GET, &path).await {
                    Ok(raw) => {
                        if size && kind != "container" {
                            eprintln!("WARNING: --size ignored for {kind}");
                        }
                        return Ok(raw);
                    }
                    Err(e) if typ.is_none() && skippable(&e) => continue,
                    Err(e) => return Err(e),
                }
            }
            Err(anyhow::anyhow!("Error: No such object: {name}"))
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn generic_inspect_walks_object_types_on_404() {
        use super::super::fake_daemon::{FakeDaemon, Script};
        use clap::Parser;
        let script = Script::new(Vec::new(), 0);
        let fake = FakeDaemon::start(script.clone());
        let cfg = tempfile::tempdir().unwrap();
        let ctx = fake.ctx(cfg.path());
        let cli = crate::Cli::try_parse_from(["berth", "inspect", "nosuch"]).unwrap();
        let err = super::super::dispatch(&ctx, cli.command.unwrap())
            .await
            .unwrap_err();
        let status = err.downcast_ref::<StatusError>().unwrap();
        assert_eq!(
            (status.code, status.message.as_deref()),
            (1, Some("Error: No such object: nosuch"))
        );
        assert_eq!(
            script.requests(),
            vec![
                "GET /v1.44/containers/nosuch/json",
                "GET /v1.44/images/nosuch/json",
                "GET /v1.44/networks/nosuch",
                "GET /v1.44/volumes/nosuch",
                "GET /v1.44/plugins/nosuch/json",
            ]
        );
    }

    #[test]
    fn events_print_like_docker() {
        let ev = serde_json::json!({
            "status": "create", "id": "abc", "Type": "container", "Action": "create",
            "Actor": {"ID": "abc", "Attributes": {"name": "evt", "image": "alpine"}},
            "scope": "local", "time": 1_700_000_000, "timeNano": 1_700_000_000_123_456_789i64
        });
        let line = pretty_event(&ev);
        assert!(
            line.ends_with(" container create abc (image=alpine, name=evt)\n"),
            "{line}"
        );
        assert!(line.contains(".123456789"), "{line}");
    }

    #[test]
    fn df_table() {
        let du: DiskUsage = serde_json::from_value(serde_json::json!({
            "LayersSize": 4_261_000, "Images": [{"Containers": 0, "Size": 4_261_000, "SharedSize": -1}],
            "Containers": [{"State": "exited", "SizeRw": 0}], "Volumes": [], "BuildCache": null
        }))
        .unwrap();
        let header = map_of([
            ("Type", s("TYPE")),
            ("TotalCount", s("TOTAL")),
            ("Active", s("ACTIVE")),
            ("Size", s("SIZE")),
            ("Reclaimable", s("RECLAIMABLE")),
        ]);
        let mut out = Vec::new();
        write_list(
            &mut out,
            "table {{.Type}}\t{{.TotalCount}}\t{{.Active}}\t{{.Size}}\t{{.Reclaimable}}",
            &header,
            df_rows(&du),
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "TYPE            TOTAL     ACTIVE    SIZE      RECLAIMABLE\n\
             Images          1         0         4.261MB   4.261MB (100%)\n\
             Containers      1         0         0B        0B\n\
             Local Volumes   0         0         0B        0B\n\
             Build Cache     0         0         0B        0B\n"
        );
    }

    #[test]
    fn df_build_cache_row() {
        let du: DiskUsage = serde_json::from_value(serde_json::json!({
            "LayersSize": 0, "Images": [], "Containers": [], "Volumes": [],
            "BuildCache": [
                {"ID": "a", "Size": 1000, "InUse": true, "Shared": false},
                {"ID": "b", "Size": 2000, "InUse": false, "Shared": false},
                {"ID": "c", "Size": 500, "InUse": true, "Shared": true}
            ]
        }))
        .unwrap();
        let rows = df_rows(&du);
        let mut out = Vec::new();
        write_list(
            &mut out,
            "{{.Type}}|{{.TotalCount}}|{{.Active}}|{{.Size}}|{{.Reclaimable}}",
            &map_of([("Type", s("TYPE"))]),
            rows,
        )
        .unwrap();
        // Shared entries count but their bytes belong to images; in-use bytes can't be freed.
        assert_eq!(
            String::from_utf8(out).unwrap().lines().last(),
            Some("Build Cache|3|2|3kB|2kB")
        );
    }
}
