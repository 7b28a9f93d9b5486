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
use crate::output::{human_size, human_size_prec, short_id, since, write_list};
use crate::reference::Reference;
use crate::template::{self, from_json, map_of, s};
use crate::timefmt::{get_timestamp, local_zone, now_unix, rfc3339_nano_fixed};

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

/// `GET /system/df` as the summary and the verbose tables read it.
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
    #[serde(rename = "RepoTags", default, deserialize_with = "de_null")]
    repo_tags: Vec<String>,
    #[serde(rename = "RepoDigests", default, deserialize_with = "de_null")]
    repo_digests: Vec<String>,
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

/// A build cache record (moby's `build.CacheRecord`).
#[derive(Deserialize, Default, Clone)]
struct DfCache {
    #[serde(rename = "ID", default, deserialize_with = "de_null")]
    id: String,
    #[serde(rename = "Parent", default, deserialize_with = "de_null")]
    parent: String,
    #[serde(rename = "Parents", default, deserialize_with = "de_null")]
    parents: Vec<String>,
    #[serde(rename = "Type", default, deserialize_with = "de_null")]
    typ: String,
    #[serde(rename = "Description", default, deserialize_with = "de_null")]
    description: String,
    #[serde(rename = "InUse", default)]
    in_use: bool,
    #[serde(rename = "Shared", default)]
    shared: bool,
    #[serde(rename = "Size", default)]
    size: i64,
    #[serde(rename = "CreatedAt", default, deserialize_with = "de_null")]
    created_at: String,
    #[serde(rename = "LastUsedAt", default)]
    last_used_at: Option<String>,
    #[serde(rename = "UsageCount", default)]
    usage_count: i64,
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

/// The build cache's bytes as docker counts them: entries shared with images are theirs.
fn builder_size(du: &DiskUsage) -> i64 {
    du.build_cache
        .iter()
        .filter(|b| !b.shared)
        .map(|b| b.size)
        .sum()
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
    let bsize = builder_size(du);
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

fn df_header() -> Value {
    map_of([
        ("Type", s("TYPE")),
        ("TotalCount", s("TOTAL")),
        ("Active", s("ACTIVE")),
        ("Size", s("SIZE")),
        ("Reclaimable", s("RECLAIMABLE")),
    ])
}

/// docker's `NewDiskUsageFormat` without `-v`.
fn df_format(source: &str) -> &str {
    match source {
        "" | "table" => {
            "table {{.Type}}\t{{.TotalCount}}\t{{.Active}}\t{{.Size}}\t{{.Reclaimable}}"
        }
        "raw" => {
            "type: {{.Type}}\ntotal: {{.TotalCount}}\nactive: {{.Active}}\nsize: {{.Size}}\nreclaimable: {{.Reclaimable}}\n"
        }
        other => other,
    }
}

/// docker's `NewDiskUsageFormat` for `-v --format raw`: each kind's raw format in a range.
const VERBOSE_RAW_FORMAT: &str = "{{range .Images}}type: Image\n\
repository: {{ .Repository }}\ntag: {{.Tag}}\ndigest: {{.Digest}}\nimage_id: {{.ID}}\n\
created_at: {{.CreatedAt}}\nvirtual_size: {{.Size}}\n\n{{end -}}\n\
{{range .Containers}}type: Container\n\
container_id: {{.ID}}\nimage: {{.Image}}\ncommand: {{.Command}}\ncreated_at: {{.CreatedAt}}\n\
state: {{- pad .State 1 0}}\nstatus: {{- pad .Status 1 0}}\nnames: {{.Names}}\n\
labels: {{- pad .Labels 1 0}}\nports: {{- pad .Ports 1 0}}\nsize: {{.Size}}\\n\n{{end -}}\n\
{{range .Volumes}}type: Volume\nname: {{.Name}}\\ndriver: {{.Driver}}\\n\n{{end -}}\n\
{{range .BuildCache}}type: Build Cache\n\
build_cache_id: {{.ID}}\nparent_id: {{.Parent}}\nbuild_cache_type: {{.CacheType}}\n\
description: {{.Description}}\ncreated_at: {{.CreatedAt}}\ncreated_since: {{.CreatedSince}}\n\
last_used_at: {{.LastUsedAt}}\nlast_used_since: {{.LastUsedSince}}\n\
usage_count: {{.UsageCount}}\nin_use: {{.InUse}}\nshared: {{.Shared}}\n\n{{end -}}";

const DF_IMAGES_TABLE: &str = "table {{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}\t{{.SharedSize}}\t{{.UniqueSize}}\t{{.Containers}}";
const DF_CONTAINERS_TABLE: &str = "table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.LocalVolumes}}\t{{.Size}}\t{{.RunningFor}}\t{{.Status}}\t{{.Names}}";
const DF_VOLUMES_TABLE: &str = "table {{.Name}}\t{{.Links}}\t{{.Size}}";
const DF_BUILD_CACHE_TABLE: &str = "table {{.ID}}\t{{.CacheType}}\t{{.Size}}\t{{.CreatedSince}}\t{{.LastUsedSince}}\t{{.UsageCount}}\t{{.Shared}}";

/// Repository and tag of an image's first name, `<none>` for dangling images and names
/// without a tag; `None` (left out, as docker does) when that name does not parse.
fn repo_and_tag(img: &DfImage) -> Option<(String, String)> {
    let none = || ("<none>".to_string(), "<none>".to_string());
    let dangling = (img.repo_tags.is_empty() && img.repo_digests.is_empty())
        || (img.repo_tags == ["<none>:<none>"] && img.repo_digests == ["<none>@<none>"]);
    let Some(first) = img.repo_tags.first().filter(|_| !dangling) else {
        return Some(none());
    };
    let reference = Reference::parse(first).ok()?;
    Some(match &reference.tag {
        Some(tag) => (reference.familiar_name(), tag.clone()),
        None => none(),
    })
}

/// Go's `time.Time.String()` of a time decoded from RFC 3339 JSON: UTC for `Z`, the local
/// zone's name when the offset is the local one, else the bare offset.
fn go_time_of_rfc3339(text: &str) -> String {
    let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) else {
        return "0001-01-01 00:00:00 +0000 UTC".into();
    };
    let nanos = t.timestamp_subsec_nanos();
    let fraction = if nanos == 0 {
        String::new()
    } else {
        format!(".{nanos:09}").trim_end_matches('0').to_string()
    };
    let offset = t.format("%z").to_string();
    let zone = if text.ends_with(['Z', 'z']) {
        "UTC".to_string()
    } else {
        match local_zone(t.timestamp()) {
            (local, name) if local == t.offset().local_minus_utc() => name,
            _ => offset.clone(),
        }
    };
    format!(
        "{}{fraction} {offset} {zone}",
        t.format("%Y-%m-%d %H:%M:%S")
    )
}

fn unix_of_rfc3339(text: &str) -> Option<chrono::DateTime<chrono::FixedOffset>> {
    chrono::DateTime::parse_from_rfc3339(text).ok()
}

/// One build cache record as docker's `buildCacheContext` shows it.
fn cache_row(c: &DfCache, trunc: bool) -> Value {
    let truncate = |id: &str| {
        if trunc {
            short_id(id).to_string()
        } else {
            id.to_string()
        }
    };
    let mut id = truncate(&c.id);
    if c.in_use {
        id.push('*');
    }
    let parent = if c.parents.is_empty() {
        c.parent.clone()
    } else {
        c.parents.join(", ")
    };
    let created = unix_of_rfc3339(&c.created_at).map_or(0, |t| t.timestamp());
    let last_used = c.last_used_at.as_deref();
    map_of([
        ("ID", s(id)),
        ("Parent", s(truncate(&parent))),
        ("CacheType", s(&c.typ)),
        ("Description", s(&c.description)),
        ("Size", s(human_size_prec(c.size as f64, 3))),
        ("CreatedAt", s(go_time_of_rfc3339(&c.created_at))),
        ("CreatedSince", s(since(created))),
        (
            "LastUsedAt",
            s(last_used.map(go_time_of_rfc3339).unwrap_or_default()),
        ),
        (
            "LastUsedSince",
            s(last_used
                .and_then(unix_of_rfc3339)
                .map(|t| since(t.timestamp()))
                .unwrap_or_default()),
        ),
        ("UsageCount", s(c.usage_count.to_string())),
        ("InUse", s(c.in_use.to_string())),
        ("Shared", s(c.shared.to_string())),
    ])
}

fn cache_header() -> Value {
    map_of([
        ("ID", s("CACHE ID")),
        ("Parent", s("PARENT")),
        ("CacheType", s("CACHE TYPE")),
        ("Size", s("SIZE")),
        ("CreatedSince", s("CREATED")),
        ("LastUsedSince", s("LAST USED")),
        ("UsageCount", s("USAGE")),
        ("InUse", s("IN USE")),
        ("Shared", s("SHARED")),
        ("Description", s("DESCRIPTION")),
    ])
}

/// docker's `buildCacheSort`: least recently used first (never used before all), then by ID.
fn sort_build_cache(entries: &mut [DfCache]) {
    entries.sort_by(|a, b| {
        let used = |c: &DfCache| c.last_used_at.as_deref().map(unix_of_rfc3339);
        used(a).cmp(&used(b)).then_with(|| a.id.cmp(&b.id))
    });
}

/// The rows of `system df -v`, one list per kind, in docker's order.
struct VerboseRows {
    images: Vec<Value>,
    containers: Vec<Value>,
    volumes: Vec<Value>,
    build_cache: Vec<Value>,
}

impl VerboseRows {
    /// Rows of every kind; `trunc` shortens IDs and commands as tables do, `format` says
    /// which container fields to compute.
    fn new(raw: &serde_json::Value, du: &DiskUsage, trunc: bool, format: &str) -> Result<Self> {
        let list = |key: &str| raw[key].as_array().cloned().unwrap_or_default();
        let mut images = Vec::new();
        for (value, img) in list("Images").into_iter().zip(&du.images) {
            let Some((repo, tag)) = repo_and_tag(img) else {
                continue;
            };
            let summary: super::image::ImageSummary = serde_json::from_value(value)?;
            images.push(super::image::image_row(&summary, &repo, &tag, "", trunc));
        }
        let wanted = super::ps::Wanted::for_format(format);
        let mut containers = Vec::new();
        for mut value in list("Containers") {
            // docker leaves the virtual size out of `df`.
            if let Some(fields) = value.as_object_mut() {
                fields.remove("SizeRootFs");
            }
            let summary: super::ps::Summary = serde_json::from_value(value)?;
            containers.push(super::ps::row(&summary, trunc, &wanted));
        }
        let mut volumes = Vec::new();
        for value in list("Volumes") {
            let volume: super::volume::Volume = serde_json::from_value(value)?;
            volumes.push(super::volume::volume_row(&volume));
        }
        let mut cache = du.build_cache.clone();
        sort_build_cache(&mut cache);
        let build_cache = cache.iter().map(|c| cache_row(c, trunc)).collect();
        Ok(VerboseRows {
            images,
            containers,
            volumes,
            build_cache,
        })
    }

    /// The four lists by the names templates use, in the field order of docker's
    /// `diskUsageContext`.
    fn fields(self) -> [(&'static str, Vec<Value>); 4] {
        [
            ("Images", self.images),
            ("Containers", self.containers),
            ("Volumes", self.volumes),
            ("BuildCache", self.build_cache),
        ]
    }
}

/// Escapes JSON text as Go's `json.Marshal` does, which docker's rows go through: `<`, `>`,
/// `&`, U+2028 and U+2029 as `\u` escapes (outside strings JSON has none of them).
fn go_html_escape(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        match c {
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out
}

/// `system df -v` output: docker's four tables for `table`, else `format` executed once
/// over all four lists (`json` as one object, fields in docker's order).
fn render_verbose(raw: &serde_json::Value, du: &DiskUsage, format: &str) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    if format == "table" {
        let rows = VerboseRows::new(raw, du, true, DF_CONTAINERS_TABLE)?;
        out.extend_from_slice(b"Images space usage:\n\n");
        write_list(
            &mut out,
            DF_IMAGES_TABLE,
            &super::image::images_header(),
            rows.images,
        )?;
        out.extend_from_slice(b"\nContainers space usage:\n\n");
        write_list(
            &mut out,
            DF_CONTAINERS_TABLE,
            &super::ps::header(),
            rows.containers,
        )?;
        out.extend_from_slice(b"\nLocal Volumes space usage:\n\n");
        write_list(
            &mut out,
            DF_VOLUMES_TABLE,
            &super::volume::volumes_header(),
            rows.volumes,
        )?;
        let size = human_size(builder_size(du) as f64);
        out.extend_from_slice(format!("\nBuild cache usage: {size}\n\n").as_bytes());
        write_list(
            &mut out,
            DF_BUILD_CACHE_TABLE,
            &cache_header(),
            rows.build_cache,
        )?;
        return Ok(out);
    }
    let format = if format == "raw" {
        VERBOSE_RAW_FORMAT
    } else {
        format
    };
    let rows = VerboseRows::new(raw, du, format.starts_with("table"), format)?;
    if template::prepare(format).text.trim() == "{{json .}}" {
        // A Go struct marshals its fields in declaration order, not sorted as a map would.
        let mut text = String::from("{");
        for (i, (name, list)) in rows.fields().into_iter().enumerate() {
            if i > 0 {
                text.push(',');
            }
            text.push_str(&format!("\"{name}\":"));
            template::to_json(&Value::List(list.into()), &mut text);
        }
        text.push('}');
        out.extend_from_slice(go_html_escape(&text).as_bytes());
        return Ok(out);
    }
    let data = map_of(
        rows.fields()
            .map(|(name, list)| (name, Value::List(list.into()))),
    );
    let compiled = template::compile(format, true)?;
    out.extend_from_slice(compiled.render(&data)?.as_bytes());
    Ok(out)
}

/// `berth system df`.
pub async fn df(ctx: &Ctx, a: DfArgs) -> Result<()> {
    let raw: serde_json::Value = ctx.client.get_json("/system/df").await?;
    let du: DiskUsage = serde_json::from_value(raw.clone())?;
    let source = a.format.as_deref().unwrap_or("");
    let out = if a.verbose {
        render_verbose(&raw, &du, if source.is_empty() { "table" } else { source })?
    } else {
        let mut out = Vec::new();
        write_list(&mut out, df_format(source), &df_header(), df_rows(&du))?;
        out
    };
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

    /// A `GET /system/df` reply whose objects were created two hours ago.
    fn verbose_fixture() -> serde_json::Value {
        let created = now_unix() - 7200;
        let stamp = chrono::DateTime::from_timestamp(created, 120_000_000)
            .unwrap()
            .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
        serde_json::json!({
            "LayersSize": 3_000_000,
            "Images": [
                {"Id": format!("sha256:{}", "a".repeat(64)), "RepoTags": ["web:1", "web:latest"],
                 "RepoDigests": [], "Created": created, "Size": 2_500_000,
                 "SharedSize": 2_000_000, "Containers": 1},
                {"Id": format!("sha256:{}", "b".repeat(64)), "RepoTags": [], "RepoDigests": [],
                 "Created": created, "Size": 2_000_000, "SharedSize": 2_000_000,
                 "Containers": 0}
            ],
            "Containers": [
                {"Id": "c".repeat(64), "Names": ["/front"], "Image": "web:1",
                 "ImageID": format!("sha256:{}", "a".repeat(64)),
                 "Command": "sh -c 'echo a > /b; sleep 1000'", "Created": created,
                 "SizeRw": 1200, "SizeRootFs": 2_501_200, "State": "running",
                 "Status": "Up 2 hours", "Mounts": [{"Name": "data", "Driver": "local"}]}
            ],
            "Volumes": [
                {"Name": "data", "Driver": "local", "Mountpoint": "/v/data/_data",
                 "Scope": "local", "Labels": null, "UsageData": {"Size": 5000, "RefCount": 1}}
            ],
            "BuildCache": [
                {"ID": "sha256:kept", "Type": "regular", "Size": 3000, "InUse": true,
                 "Shared": true, "CreatedAt": stamp, "LastUsedAt": stamp, "UsageCount": 2},
                {"ID": "sha256:0123456789abcdef", "Type": "regular", "Size": 700,
                 "InUse": false, "Shared": false, "CreatedAt": stamp, "LastUsedAt": null,
                 "UsageCount": 1}
            ]
        })
    }

    #[test]
    fn df_verbose_tables_like_docker() {
        let raw = verbose_fixture();
        let du: DiskUsage = serde_json::from_value(raw.clone()).unwrap();
        let out = String::from_utf8(render_verbose(&raw, &du, "table").unwrap()).unwrap();
        let want = "Images space usage:\n\n\
REPOSITORY   TAG       IMAGE ID       CREATED       SIZE      SHARED SIZE   UNIQUE SIZE   CONTAINERS\n\
web          1         aaaaaaaaaaaa   2 hours ago   2.5MB     2MB           500kB         1\n\
<none>       <none>    bbbbbbbbbbbb   2 hours ago   2MB       2MB           0B            0\n\
\n\
Containers space usage:\n\n\
CONTAINER ID   IMAGE     COMMAND                  LOCAL VOLUMES   SIZE      CREATED       STATUS       NAMES\n\
cccccccccccc   web:1     \"sh -c 'echo a > /b;…\"   1               1.2kB     2 hours ago   Up 2 hours   front\n\
\n\
Local Volumes space usage:\n\n\
VOLUME NAME   LINKS     SIZE\n\
data          1         5kB\n\
\n\
Build cache usage: 700B\n\n\
CACHE ID       CACHE TYPE   SIZE      CREATED       LAST USED     USAGE     SHARED\n\
0123456789ab   regular      700B      2 hours ago                 1         false\n\
kept*          regular      3kB       2 hours ago   2 hours ago   2         true\n";
        assert_eq!(out, want, "\n{out}");
    }

    #[test]
    fn df_verbose_json_and_templates() {
        let raw = verbose_fixture();
        let du: DiskUsage = serde_json::from_value(raw.clone()).unwrap();
        let render =
            |format: &str| String::from_utf8(render_verbose(&raw, &du, format).unwrap()).unwrap();
        let json = render("json");
        // docker's struct order, full IDs, HTML characters escaped, no trailing newline.
        assert!(
            json.starts_with(r#"{"Images":[{"Containers":"1","#),
            "{json}"
        );
        let order: Vec<usize> = ["\"Containers\":[", "\"Volumes\":[", "\"BuildCache\":["]
            .iter()
            .map(|k| json.find(k).unwrap())
            .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{json}");
        assert!(json.contains(&"c".repeat(64)), "{json}");
        assert!(json.contains(r"echo a \u003e /b"), "{json}");
        assert!(json.ends_with("]}"), "{json}");
        let parsed: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(parsed["Images"][1]["Repository"], "<none>");
        assert_eq!(parsed["Containers"][0]["Size"], "1.2kB");
        assert_eq!(parsed["Volumes"][0]["Status"], "N/A");
        assert_eq!(parsed["BuildCache"][1]["ID"], "sha256:kept*");
        let text =
            render("{{range .Images}}{{.Repository}} {{.UniqueSize}}\n{{end}}{{len .BuildCache}}");
        assert_eq!(text, "web 500kB\n<none> 0B\n2");
        assert!(render_verbose(&raw, &du, "{{.Nope}}").is_err());
        let raw_format = render("raw");
        assert!(
            raw_format.starts_with("type: Image\nrepository: web\ntag: 1\ndigest: \nimage_id: "),
            "{raw_format}"
        );
        assert!(
            raw_format.contains("\ntype: Volume\nname: data\ndriver: local\n"),
            "{raw_format}"
        );
        assert!(
            raw_format.contains("\nbuild_cache_id: sha256:kept*\n"),
            "{raw_format}"
        );
    }

    #[test]
    fn df_image_names_and_cache_times() {
        let image = |tags: &[&str], digests: &[&str]| DfImage {
            repo_tags: tags.iter().map(|t| t.to_string()).collect(),
            repo_digests: digests.iter().map(|d| d.to_string()).collect(),
            ..Default::default()
        };
        let pair = |r: &str, t: &str| Some((r.to_string(), t.to_string()));
        assert_eq!(
            repo_and_tag(&image(&["docker.io/library/a:1"], &[])),
            pair("a", "1")
        );
        assert_eq!(repo_and_tag(&image(&[], &[])), pair("<none>", "<none>"));
        assert_eq!(
            repo_and_tag(&image(&["<none>:<none>"], &["<none>@<none>"])),
            pair("<none>", "<none>")
        );
        assert_eq!(repo_and_tag(&image(&["Bad:Name"], &[])), None);
        assert_eq!(
            go_time_of_rfc3339("2024-05-01T10:00:00.120000000Z"),
            "2024-05-01 10:00:00.12 +0000 UTC"
        );
        assert_eq!(
            go_time_of_rfc3339("2024-05-01T10:00:00Z"),
            "2024-05-01 10:00:00 +0000 UTC"
        );
        let entry = |id: &str, used: Option<&str>| DfCache {
            id: id.into(),
            last_used_at: used.map(str::to_string),
            ..Default::default()
        };
        let mut entries = vec![
            entry("b", Some("2024-05-01T10:00:01Z")),
            entry("c", Some("2024-05-01T10:00:00Z")),
            entry("z", None),
            entry("a", Some("2024-05-01T10:00:01Z")),
        ];
        sort_build_cache(&mut entries);
        let ids: Vec<&str> = entries.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["z", "c", "a", "b"]);
        assert_eq!(
            go_html_escape(r#"{"a":"<&>"}"#),
            r#"{"a":"\u003c\u0026\u003e"}"#
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
