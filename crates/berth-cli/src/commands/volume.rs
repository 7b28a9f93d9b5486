//! Volume commands: volume create, ls, inspect, rm, prune.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::Args;
use gotmpl::Value;
use hyper::Method;
use serde::Deserialize;
use serde_json::{Map, json};

use super::network::kv_map;
use super::{Ctx, confirm, de_null, docker_config_string, for_each_arg, parse_filters, print_out};
use crate::client::{enc, enc_path};
use crate::output::{human_size, write_list};
use crate::template::{label_func, label_header_func, map_of, s};

/// `berth volume create`
#[derive(Args, Debug)]
pub struct VolumeCreateArgs {
    /// Specify volume driver name
    #[arg(short = 'd', long, value_name = "string", default_value = "local")]
    driver: String,
    /// Set metadata for a volume
    #[arg(long, value_name = "list")]
    label: Vec<String>,
    /// Specify volume name
    #[arg(long = "name", value_name = "string", hide = true)]
    name_flag: Option<String>,
    /// Set driver specific options
    #[arg(short = 'o', long, value_name = "map")]
    opt: Vec<String>,
    /// [VOLUME]
    #[arg(value_name = "VOLUME")]
    name: Option<String>,
}

/// `berth volume ls`
#[derive(Args, Debug)]
pub struct VolumeLsArgs {
    /// Provide filter values (e.g. "dangling=true")
    #[arg(short = 'f', long, value_name = "filter")]
    filter: Vec<String>,
    /// Format output using a custom template
    #[arg(long, value_name = "string")]
    format: Option<String>,
    /// Only display volume names
    #[arg(short = 'q', long)]
    quiet: bool,
}

/// `berth volume inspect`
#[derive(Args, Debug)]
pub struct VolumeInspectArgs {
    /// Format output using a custom template
    #[arg(short = 'f', long, value_name = "string")]
    format: Option<String>,
    /// VOLUME [VOLUME...]
    #[arg(value_name = "VOLUME", required = true)]
    volumes: Vec<String>,
}

/// `berth volume rm`
#[derive(Args, Debug)]
pub struct VolumeRmArgs {
    /// Force the removal of one or more volumes
    #[arg(short = 'f', long)]
    force: bool,
    /// VOLUME [VOLUME...]
    #[arg(value_name = "VOLUME", required = true)]
    volumes: Vec<String>,
}

/// `berth volume prune`
#[derive(Args, Debug)]
pub struct VolumePruneArgs {
    /// Remove all unused volumes, not just anonymous ones
    #[arg(short = 'a', long)]
    all: bool,
    /// Provide filter values (e.g. "label=<label>")
    #[arg(long, value_name = "filter")]
    filter: Vec<String>,
    /// Do not prompt for confirmation
    #[arg(short = 'f', long)]
    force: bool,
}

/// The `POST /volumes/create` body: empty fields are left out, as the Go CLI's `omitempty`.
fn create_body(a: &VolumeCreateArgs) -> Result<serde_json::Value> {
    let name = match (&a.name, &a.name_flag) {
        (Some(n), Some(f)) if n != f => {
            bail!(
                "conflicting options: cannot specify a volume-name through both --name and as a positional arg"
            )
        }
        (Some(n), _) | (None, Some(n)) => Some(n.clone()),
        (None, None) => None,
    };
    let mut body = Map::new();
    body.insert("Driver".into(), json!(a.driver));
    if !a.opt.is_empty() {
        body.insert("DriverOpts".into(), json!(kv_map(&a.opt)));
    }
    if !a.label.is_empty() {
        body.insert("Labels".into(), json!(kv_map(&a.label)));
    }
    if let Some(n) = name.filter(|n| !n.is_empty()) {
        body.insert("Name".into(), json!(n));
    }
    Ok(serde_json::Value::Object(body))
}

/// A volume as `GET /volumes` lists it, tolerant of missing and null fields.
#[derive(Debug, Default, Deserialize)]
pub struct Volume {
    #[serde(rename = "Name", default, deserialize_with = "de_null")]
    name: String,
    #[serde(rename = "Driver", default, deserialize_with = "de_null")]
    driver: String,
    #[serde(rename = "Scope", default, deserialize_with = "de_null")]
    scope: String,
    #[serde(rename = "Mountpoint", default, deserialize_with = "de_null")]
    mountpoint: String,
    #[serde(rename = "Labels", default, deserialize_with = "de_null")]
    labels: BTreeMap<String, String>,
    #[serde(rename = "UsageData", default)]
    usage: Option<UsageData>,
}

/// Size and reference count, present only when the daemon computed them (`system df`).
#[derive(Debug, Default, Deserialize)]
struct UsageData {
    #[serde(rename = "Size", default)]
    size: i64,
    #[serde(rename = "RefCount", default)]
    ref_count: i64,
}

#[derive(Debug, Default, Deserialize)]
struct VolumeList {
    #[serde(rename = "Volumes", default, deserialize_with = "de_null")]
    volumes: Vec<Volume>,
}

pub(super) fn volume_row(v: &Volume) -> Value {
    let labels = v
        .labels
        .iter()
        .map(|(k, val)| format!("{k}={val}"))
        .collect::<Vec<_>>()
        .join(",");
    let (links, size) = match &v.usage {
        Some(u) if u.size >= 0 => (u.ref_count.to_string(), human_size(u.size as f64)),
        Some(u) => (u.ref_count.to_string(), "N/A".to_string()),
        None => ("N/A".to_string(), "N/A".to_string()),
    };
    map_of([
        ("Name", s(&v.name)),
        ("Driver", s(&v.driver)),
        ("Scope", s(&v.scope)),
        ("Mountpoint", s(&v.mountpoint)),
        ("Labels", s(labels)),
        ("Label", label_func(Arc::new(v.labels.clone()))),
        ("Links", s(links)),
        ("Size", s(size)),
        // Cluster volumes only; docker shows N/A for local ones.
        ("Group", s("N/A")),
        ("Availability", s("N/A")),
        ("Status", s("N/A")),
    ])
}

pub(super) fn volumes_header() -> Value {
    map_of([
        ("Name", s("VOLUME NAME")),
        ("Driver", s("DRIVER")),
        ("Scope", s("SCOPE")),
        ("Mountpoint", s("MOUNTPOINT")),
        ("Labels", s("LABELS")),
        ("Label", label_header_func()),
        ("Links", s("LINKS")),
        ("Size", s("SIZE")),
        ("Group", s("GROUP")),
        ("Availability", s("AVAILABILITY")),
        ("Status", s("STATUS")),
    ])
}

/// Renders `volume ls` output for `format` (`table`, a template, or quiet).
fn render_volumes(mut list: Vec<Volume>, format: &str, quiet: bool) -> Result<Vec<u8>> {
    list.sort_by(|a, b| a.name.cmp(&b.name));
    let format = match format {
        "table" if quiet => "{{.Name}}",
        "table" => "table {{.Driver}}\t{{.Name}}",
        other => other,
    };
    let mut out = Vec::new();
    write_list(
        &mut out,
        format,
        &volumes_header(),
        list.iter().map(volume_row),
    )?;
    Ok(out)
}

/// `berth volume create`: prints the volume's name.
pub async fn create(ctx: &Ctx, a: VolumeCreateArgs) -> Result<()> {
    let body = create_body(&a).map_err(super::refused_create)?;
    let raw = ctx
        .client
        .post_json("/volumes/create", &body)
        .await
        .map_err(super::refused_create)?;
    let vol: Volume = serde_json::from_slice(&raw).context("decoding the volume create reply")?;
    print_out(format!("{}\n", vol.name).as_bytes())
}

/// `berth volume ls`.
pub async fn ls(ctx: &Ctx, a: VolumeLsArgs) -> Result<()> {
    let filters = parse_filters(&a.filter)?;
    let path = if filters.is_empty() {
        "/volumes".to_string()
    } else {
        format!("/volumes?filters={}", enc(&filters.to_json()))
    };
    let list: VolumeList = ctx.client.get_json(&path).await?;
    let source = match &a.format {
        Some(f) if !f.is_empty() => f.clone(),
        _ => match docker_config_string(ctx, "volumesFormat") {
            Some(f) if !a.quiet => f,
            _ => "table".to_string(),
        },
    };
    let out = render_volumes(list.volumes, &source, a.quiet)?;
    print_out(&out)
}

/// `berth volume inspect`.
pub async fn inspect(ctx: &Ctx, a: VolumeInspectArgs) -> Result<()> {
    super::inspect::inspect_refs(&a.volumes, a.format.as_deref(), |name| {
        let path = format!("/volumes/{}", enc_path(&name));
        async move { ctx.client.call_bytes(Method::GET, &path).await }
    })
    .await
}

/// `berth volume rm`: prints each removed volume's name.
pub async fn rm(ctx: &Ctx, a: VolumeRmArgs) -> Result<()> {
    let suffix = if a.force { "?force=1" } else { "" };
    for_each_arg(&a.volumes, |name| async move {
        let path = format!("/volumes/{}{suffix}", enc_path(&name));
        ctx.client.call_bytes(Method::DELETE, &path).await?;
        Ok(Some(name))
    })
    .await
}

#[derive(Debug, Default, Deserialize)]
struct VolumePruneReply {
    #[serde(rename = "VolumesDeleted", default, deserialize_with = "de_null")]
    deleted: Vec<String>,
    #[serde(rename = "SpaceReclaimed", default, deserialize_with = "de_null")]
    space: u64,
}

/// `berth volume prune`.
pub async fn prune(ctx: &Ctx, a: VolumePruneArgs) -> Result<()> {
    let mut filters = parse_filters(&a.filter)?;
    if a.all {
        if filters.to_json().contains("\"all\":") {
            bail!("conflicting options: cannot specify both --all and --filter all=1");
        }
        filters.add("all", "true");
    }
    let warning = if a.all {
        "WARNING! This will remove all local volumes not used by at least one container.\nAre you sure you want to continue?"
    } else {
        "WARNING! This will remove anonymous local volumes not used by at least one container.\nAre you sure you want to continue?"
    };
    if !a.force && !confirm(warning) {
        return Ok(());
    }
    let path = if filters.is_empty() {
        "/volumes/prune".to_string()
    } else {
        format!("/volumes/prune?filters={}", enc(&filters.to_json()))
    };
    let raw = ctx.client.call_bytes(Method::POST, &path).await?;
    let reply: VolumePruneReply =
        serde_json::from_slice(&raw).context("decoding the volume prune reply")?;
    let mut out = String::new();
    if !reply.deleted.is_empty() {
        out.push_str("Deleted Volumes:\n");
        for name in &reply.deleted {
            out.push_str(name);
            out.push('\n');
        }
        out.push('\n');
    }
    out.push_str(&format!(
        "Total reclaimed space: {}\n",
        human_size(reply.space as f64)
    ));
    print_out(out.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::super::fake_daemon::{Script, run_cli as run};
    use super::*;

    fn vol(name: &str) -> Volume {
        Volume {
            name: name.into(),
            driver: "local".into(),
            scope: "local".into(),
            ..Default::default()
        }
    }

    #[test]
    fn ls_table_matches_docker() {
        let out = render_volumes(vec![vol("myvol"), vol("data")], "table", false).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "DRIVER    VOLUME NAME\nlocal     data\nlocal     myvol\n"
        );
        let out = render_volumes(vec![vol("b"), vol("a")], "table", true).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "a\nb\n");
        let mut v = vol("x");
        v.labels.insert("k".into(), "v".into());
        let out = render_volumes(
            vec![v],
            "{{.Name}} {{.Labels}} {{.Label \"k\"}} {{.Links}} {{.Size}}",
            false,
        )
        .unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "x k=v v N/A N/A\n");
    }

    #[tokio::test]
    async fn create_bodies_leave_out_empty_fields() {
        let script = Script::new(Vec::new(), 0);
        script.reply(
            "POST",
            "/volumes/create",
            201,
            r#"{"Name":"myvol","Driver":"local"}"#,
        );
        run(
            &script,
            &[
                "berth",
                "volume",
                "create",
                "--label",
                "a=b",
                "-o",
                "type=tmpfs",
                "myvol",
            ],
        )
        .await
        .unwrap();
        let body: serde_json::Value =
            serde_json::from_str(&script.body("POST /v1.44/volumes/create").unwrap()).unwrap();
        assert_eq!(
            body,
            json!({"Driver":"local","DriverOpts":{"type":"tmpfs"},"Labels":{"a":"b"},"Name":"myvol"})
        );
        run(&script, &["berth", "volume", "create"]).await.unwrap();
        let body: serde_json::Value =
            serde_json::from_str(&script.body("POST /v1.44/volumes/create").unwrap()).unwrap();
        assert_eq!(body, json!({"Driver":"local"}));
    }

    #[tokio::test]
    async fn rm_ls_and_prune_requests() {
        let script = Script::new(Vec::new(), 0);
        script.reply("DELETE", "/volumes/myvol", 204, "");
        script.reply(
            "GET",
            "/volumes",
            200,
            r#"{"Volumes":null,"Warnings":null}"#,
        );
        script.reply(
            "POST",
            "/volumes/prune",
            200,
            r#"{"VolumesDeleted":["v1"],"SpaceReclaimed":2048}"#,
        );
        run(&script, &["berth", "volume", "rm", "-f", "myvol"])
            .await
            .unwrap();
        run(&script, &["berth", "volume", "rm", "myvol"])
            .await
            .unwrap();
        run(&script, &["berth", "volume", "ls", "-q"])
            .await
            .unwrap();
        run(&script, &["berth", "volume", "prune", "-a", "-f"])
            .await
            .unwrap();
        run(&script, &["berth", "volume", "prune", "-f"])
            .await
            .unwrap();
        assert_eq!(
            script.requests(),
            vec![
                "DELETE /v1.44/volumes/myvol?force=1",
                "DELETE /v1.44/volumes/myvol",
                "GET /v1.44/volumes",
                "POST /v1.44/volumes/prune?filters=%7B%22all%22%3A%7B%22true%22%3Atrue%7D%7D",
                "POST /v1.44/volumes/prune",
            ]
        );
        let err = run(&script, &["berth", "volume", "rm", "gone"])
            .await
            .unwrap_err();
        assert_eq!(
            err.downcast_ref::<super::super::StatusError>()
                .unwrap()
                .code,
            1
        );
    }
}
