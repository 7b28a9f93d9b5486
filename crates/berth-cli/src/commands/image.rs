//! Image commands: images (image ls), history, tag, rmi, image prune, image inspect.

use std::collections::HashMap;

use anyhow::{Result, bail};
use clap::Args;
use gotmpl::Value;
use hyper::Method;
use serde::Deserialize;

use super::{Ctx, StatusError, confirm, de_null, docker_config_string, parse_filters, print_out};
use crate::client::{self, enc, enc_path, query};
use crate::output::{ellipsis, human_size, human_size_prec, short_id, since, write_list};
use crate::reference::Reference;
use crate::template::{map_of, s};
use crate::timefmt::{go_time_string, now_unix, rfc3339_local};

/// `berth images`
#[derive(Args, Debug)]
pub struct ImagesArgs {
    /// Show all images (default hides intermediate images)
    #[arg(short = 'a', long)]
    all: bool,
    /// Show digests
    #[arg(long)]
    digests: bool,
    /// Filter output based on conditions provided
    #[arg(short = 'f', long, value_name = "filter")]
    filter: Vec<String>,
    /// Format output using a custom template
    #[arg(long, value_name = "string")]
    format: Option<String>,
    /// Don't truncate output
    #[arg(long = "no-trunc")]
    no_trunc: bool,
    /// Only show image IDs
    #[arg(short = 'q', long)]
    quiet: bool,
    /// [REPOSITORY[:TAG]]
    #[arg(value_name = "REPOSITORY[:TAG]")]
    reference: Option<String>,
}

/// `berth history`
#[derive(Args, Debug)]
pub struct HistoryArgs {
    /// Format output using a custom template
    #[arg(long, value_name = "string")]
    format: Option<String>,
    /// Print sizes and dates in human readable format
    #[arg(short = 'H', long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "true", action = clap::ArgAction::Set)]
    human: bool,
    /// Don't truncate output
    #[arg(long = "no-trunc")]
    no_trunc: bool,
    /// Only show image IDs
    #[arg(short = 'q', long)]
    quiet: bool,
    /// IMAGE
    #[arg(value_name = "IMAGE")]
    image: String,
}

/// `berth tag`
#[derive(Args, Debug)]
pub struct TagArgs {
    /// SOURCE_IMAGE[:TAG]
    #[arg(value_name = "SOURCE_IMAGE[:TAG]")]
    source: String,
    /// TARGET_IMAGE[:TAG]
    #[arg(value_name = "TARGET_IMAGE[:TAG]")]
    target: String,
}

/// `berth rmi`
#[derive(Args, Debug)]
pub struct RmiArgs {
    /// Force removal of the image
    #[arg(short = 'f', long)]
    force: bool,
    /// Do not delete untagged parents
    #[arg(long = "no-prune")]
    no_prune: bool,
    /// IMAGE [IMAGE...]
    #[arg(value_name = "IMAGE", required = true)]
    images: Vec<String>,
}

/// `berth image prune`
#[derive(Args, Debug)]
pub struct ImagePruneArgs {
    /// Remove all unused images, not just dangling ones
    #[arg(short = 'a', long)]
    all: bool,
    /// Provide filter values (e.g. "until=<timestamp>")
    #[arg(long, value_name = "filter")]
    filter: Vec<String>,
    /// Do not prompt for confirmation
    #[arg(short = 'f', long)]
    force: bool,
}

/// `berth image inspect`
#[derive(Args, Debug)]
pub struct ImageInspectArgs {
    /// Format output using a custom template
    #[arg(short = 'f', long, value_name = "string")]
    format: Option<String>,
    /// IMAGE [IMAGE...]
    #[arg(value_name = "IMAGE", required = true)]
    images: Vec<String>,
}

/// An image list entry, tolerant of missing and null fields.
#[derive(Debug, Default, Deserialize)]
pub struct ImageSummary {
    #[serde(rename = "Id", default, deserialize_with = "de_null")]
    id: String,
    #[serde(rename = "RepoTags", default, deserialize_with = "de_null")]
    repo_tags: Vec<String>,
    #[serde(rename = "RepoDigests", default, deserialize_with = "de_null")]
    repo_digests: Vec<String>,
    #[serde(rename = "Created", default, deserialize_with = "de_null")]
    created: i64,
    #[serde(rename = "Size", default, deserialize_with = "de_null")]
    size: i64,
    #[serde(rename = "SharedSize", default = "minus_one")]
    shared_size: i64,
    #[serde(rename = "Containers", default = "minus_one")]
    containers: i64,
}

fn minus_one() -> i64 {
    -1
}

pub(super) fn image_row(
    img: &ImageSummary,
    repo: &str,
    tag: &str,
    digest: &str,
    trunc: bool,
) -> Value {
    let na = |v: i64, f: &dyn Fn(i64) -> String| if v == -1 { "N/A".to_string() } else { f(v) };
    map_of([
        ("ID", s(if trunc { short_id(&img.id) } else { &img.id })),
        ("Repository", s(repo)),
        ("Tag", s(tag)),
        ("Digest", s(digest)),
        ("CreatedSince", s(since(img.created))),
        ("CreatedAt", s(go_time_string(img.created))),
        ("Size", s(human_size_prec(img.size as f64, 3))),
        ("Containers", s(na(img.containers, &|v| v.to_string()))),
        ("VirtualSize", s(human_size(img.size as f64))),
        (
            "SharedSize",
            s(na(img.shared_size, &|v| human_size(v as f64))),
        ),
        (
            "UniqueSize",
            s(if img.size == -1 || img.shared_size == -1 {
                "N/A".to_string()
            } else {
                human_size((img.size - img.shared_size) as f64)
            }),
        ),
    ])
}

pub(super) fn images_header() -> Value {
    map_of([
        ("ID", s("IMAGE ID")),
        ("Repository", s("REPOSITORY")),
        ("Tag", s("TAG")),
        ("Digest", s("DIGEST")),
        ("CreatedSince", s("CREATED")),
        ("CreatedAt", s("CREATED AT")),
        ("Size", s("SIZE")),
        ("Containers", s("CONTAINERS")),
        ("VirtualSize", s("SIZE")),
        ("SharedSize", s("SHARED SIZE")),
        ("UniqueSize", s("UNIQUE SIZE")),
    ])
}

/// Expands an image into one row per repository:tag (docker's `imageFormat`).
fn image_rows(
    img: &ImageSummary,
    need_digest: bool,
    show_digests: bool,
    trunc: bool,
) -> Vec<Value> {
    let dangling = (img.repo_tags.is_empty() && img.repo_digests.is_empty())
        || (img.repo_tags == ["<none>:<none>"] && img.repo_digests == ["<none>@<none>"]);
    if dangling {
        return vec![image_row(img, "<none>", "<none>", "<none>", trunc)];
    }
    let mut order: Vec<String> = Vec::new();
    let mut tags: HashMap<String, Vec<String>> = HashMap::new();
    for t in &img.repo_tags {
        if let Ok(r) = Reference::parse(t)
            && let Some(tag) = &r.tag
        {
            let name = r.familiar_name();
            if !tags.contains_key(&name) {
                order.push(name.clone());
            }
            tags.entry(name).or_default().push(tag.clone());
        }
    }
    let mut digests: HashMap<String, Vec<String>> = HashMap::new();
    let mut digest_order: Vec<String> = Vec::new();
    for d in &img.repo_digests {
        if let Ok(r) = Reference::parse(d)
            && let Some(dg) = &r.digest
        {
            let name = r.familiar_name();
            if !digests.contains_key(&name) {
                digest_order.push(name.clone());
            }
            digests.entry(name).or_default().push(dg.clone());
        }
    }
    let mut rows = Vec::new();
    for repo in &order {
        let repo_digests = digests
            .remove(repo)
            .filter(|_| need_digest)
            .unwrap_or_default();
        for tag in &tags[repo] {
            if repo_digests.is_empty() {
                rows.push(image_row(img, repo, tag, "<none>", trunc));
            }
            for d in &repo_digests {
                rows.push(image_row(img, repo, tag, d, trunc));
            }
        }
    }
    for repo in digest_order {
        let Some(ds) = digests.get(&repo) else {
            continue;
        };
        if show_digests {
            for d in ds {
                rows.push(image_row(img, &repo, "<none>", d, trunc));
            }
        } else {
            rows.push(image_row(img, &repo, "<none>", "", trunc));
        }
    }
    rows
}

/// docker's `NewImageFormat`.
fn images_format(source: &str, quiet: bool, digests: bool) -> String {
    const DEFAULT: &str = "table {{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{if .CreatedSince }}{{.CreatedSince}}{{else}}N/A{{end}}\t{{.Size}}";
    const WITH_DIGEST: &str = "table {{.Repository}}\t{{.Tag}}\t{{.Digest}}\t{{.ID}}\t{{if .CreatedSince }}{{.CreatedSince}}{{else}}N/A{{end}}\t{{.Size}}";
    match source {
        "table" if quiet => "{{.ID}}".into(),
        "table" if digests => WITH_DIGEST.into(),
        "table" => DEFAULT.into(),
        other if other.starts_with("table") && digests && !other.contains("{{.Digest}}") => {
            format!("{other}\t{{{{.Digest}}}}")
        }
        other => other.into(),
    }
}

/// `berth images` / `berth image ls`.
pub async fn images(ctx: &Ctx, a: ImagesArgs) -> Result<()> {
    let mut filters = parse_filters(&a.filter)?;
    if let Some(r) = &a.reference {
        filters.add("reference", r);
    }
    let mut q = Vec::new();
    if a.all {
        q.push(("all", "1".to_string()));
    }
    if !filters.is_empty() {
        q.push(("filters", filters.to_json()));
    }
    let list: Vec<ImageSummary> = ctx
        .client
        .get_json(&format!("/images/json{}", query(&q)))
        .await?;
    let source = match &a.format {
        Some(f) if !f.is_empty() => f.clone(),
        _ => match docker_config_string(ctx, "imagesFormat") {
            Some(f) if !a.quiet => f,
            _ => "table".to_string(),
        },
    };
    let format = images_format(&source, a.quiet, a.digests);
    let need_digest = a.digests || format.contains("{{.Digest}}");
    let trunc = !a.no_trunc;
    let rows: Vec<Value> = list
        .iter()
        .flat_map(|img| image_rows(img, need_digest, a.digests, trunc))
        .collect();
    let mut out = Vec::new();
    write_list(&mut out, &format, &images_header(), rows)?;
    print_out(&out)
}

#[derive(Debug, Default, Deserialize)]
struct HistoryItem {
    #[serde(rename = "Id", default, deserialize_with = "de_null")]
    id: String,
    #[serde(rename = "Created", default, deserialize_with = "de_null")]
    created: i64,
    #[serde(rename = "CreatedBy", default, deserialize_with = "de_null")]
    created_by: String,
    #[serde(rename = "Size", default, deserialize_with = "de_null")]
    size: i64,
    #[serde(rename = "Comment", default, deserialize_with = "de_null")]
    comment: String,
}

/// 2000-01-01T00:00:00Z: older creation times show as `N/A`.
const HISTORY_EPOCH: i64 = 946_684_800;

fn history_row(h: &HistoryItem, human: bool, trunc: bool) -> Value {
    let created_at = rfc3339_local(h.created);
    let since_text = if !human {
        created_at.clone()
    } else if h.created <= HISTORY_EPOCH {
        "N/A".to_string()
    } else {
        format!(
            "{} ago",
            berth_api::units::human_duration((now_unix() - h.created) as f64)
        )
    };
    let created_by = h.created_by.replace('\t', " ");
    map_of([
        ("ID", s(if trunc { short_id(&h.id) } else { &h.id })),
        ("CreatedSince", s(since_text)),
        ("CreatedAt", s(created_at)),
        (
            "CreatedBy",
            s(if trunc {
                ellipsis(&created_by, 45)
            } else {
                created_by
            }),
        ),
        (
            "Size",
            s(if human {
                human_size_prec(h.size as f64, 3)
            } else {
                h.size.to_string()
            }),
        ),
        ("Comment", s(&h.comment)),
    ])
}

/// `berth history`.
pub async fn history(ctx: &Ctx, a: HistoryArgs) -> Result<()> {
    let items: Vec<HistoryItem> = ctx
        .client
        .get_json(&format!("/images/{}/history", enc_path(&a.image)))
        .await?;
    let source = a
        .format
        .clone()
        .filter(|f| !f.is_empty())
        .unwrap_or_else(|| "table".into());
    let format = match source.as_str() {
        "table" if a.quiet => "{{.ID}}".to_string(),
        "table" if !a.human => {
            "table {{.ID}}\t{{.CreatedAt}}\t{{.CreatedBy}}\t{{.Size}}\t{{.Comment}}".into()
        }
        "table" => {
            "table {{.ID}}\t{{.CreatedSince}}\t{{.CreatedBy}}\t{{.Size}}\t{{.Comment}}".into()
        }
        other => other.to_string(),
    };
    let header = map_of([
        ("ID", s("IMAGE")),
        ("CreatedSince", s("CREATED")),
        ("CreatedAt", s("CREATED AT")),
        ("CreatedBy", s("CREATED BY")),
        ("Size", s("SIZE")),
        ("Comment", s("COMMENT")),
    ]);
    let rows = items.iter().map(|h| history_row(h, a.human, !a.no_trunc));
    let mut out = Vec::new();
    write_list(&mut out, &format, &header, rows)?;
    print_out(&out)
}

/// `berth tag`: the source as typed, the target fully normalised.
pub async fn tag(ctx: &Ctx, a: TagArgs) -> Result<()> {
    let target = Reference::parse(&a.target)?;
    if target.digest.is_some() {
        bail!("refusing to create a tag with a digest reference");
    }
    let q = query(&[
        ("repo", target.name()),
        ("tag", target.tag.clone().unwrap_or_default()),
    ]);
    ctx.client
        .call(
            Method::POST,
            &format!("/images/{}/tag{q}", enc_path(&a.source)),
        )
        .await?;
    Ok(())
}

#[derive(Debug, Default, Deserialize)]
struct DeleteItem {
    #[serde(rename = "Untagged", default, deserialize_with = "de_null")]
    untagged: String,
    #[serde(rename = "Deleted", default, deserialize_with = "de_null")]
    deleted: String,
}

/// `berth rmi`.
pub async fn rmi(ctx: &Ctx, a: RmiArgs) -> Result<()> {
    let mut q = Vec::new();
    if a.force {
        q.push(("force", "1".to_string()));
    }
    if a.no_prune {
        q.push(("noprune", "1".to_string()));
    }
    let q = query(&q);
    let mut errors = Vec::new();
    let mut fatal = false;
    for img in &a.images {
        match ctx
            .client
            .call_bytes(Method::DELETE, &format!("/images/{}{q}", enc_path(img)))
            .await
        {
            Ok(body) => {
                let items: Vec<DeleteItem> = serde_json::from_slice(&body).unwrap_or_default();
                let mut out = String::new();
                for d in items {
                    if d.deleted.is_empty() {
                        out.push_str(&format!("Untagged: {}\n", d.untagged));
                    } else {
                        out.push_str(&format!("Deleted: {}\n", d.deleted));
                    }
                }
                print_out(out.as_bytes())?;
            }
            Err(e) => {
                if !client::is_not_found(&e) {
                    fatal = true;
                }
                errors.push(format!("{e:#}"));
            }
        }
    }
    if errors.is_empty() {
        return Ok(());
    }
    let msg = errors.join("\n");
    if !a.force || fatal {
        return Err(anyhow::Error::new(StatusError {
            code: 1,
            message: Some(msg),
        }));
    }
    eprintln!("{msg}");
    Ok(())
}

#[derive(Debug, Default, Deserialize)]
struct ImagePruneReply {
    #[serde(rename = "ImagesDeleted", default, deserialize_with = "de_null")]
    deleted: Vec<DeleteItem>,
    #[serde(rename = "SpaceReclaimed", default, deserialize_with = "de_null")]
    space: u64,
}

/// Runs `POST /images/prune` with `dangling=<!all>` added; returns (space, report text).
pub async fn prune_images(
    ctx: &Ctx,
    mut filters: berth_api::filters::Filters,
    all: bool,
) -> Result<(u64, String)> {
    filters.add("dangling", if all { "false" } else { "true" });
    let body = ctx
        .client
        .call_bytes(
            Method::POST,
            &format!("/images/prune?filters={}", enc(&filters.to_json())),
        )
        .await?;
    let reply: ImagePruneReply = serde_json::from_slice(&body)?;
    if reply.deleted.is_empty() {
        return Ok((0, String::new()));
    }
    let mut text = "Deleted Images:\n".to_string();
    for d in &reply.deleted {
        if d.untagged.is_empty() {
            text.push_str(&format!("deleted: {}\n", d.deleted));
        } else {
            text.push_str(&format!("untagged: {}\n", d.untagged));
        }
    }
    Ok((reply.space, text))
}

/// `berth image prune`.
pub async fn prune(ctx: &Ctx, a: ImagePruneArgs) -> Result<()> {
    let filters = parse_filters(&a.filter)?;
    let warning = if a.all {
        "WARNING! This will remove all images without at least one container associated to them.\nAre you sure you want to continue?"
    } else {
        "WARNING! This will remove all dangling images.\nAre you sure you want to continue?"
    };
    if !a.force && !confirm(warning) {
        return Ok(());
    }
    let (space, text) = prune_images(ctx, filters, a.all).await?;
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

/// `berth image inspect`.
pub async fn inspect(ctx: &Ctx, a: ImageInspectArgs) -> Result<()> {
    super::inspect::inspect_refs(&a.images, a.format.as_deref(), |img| {
        let path = format!("/images/{}/json", enc_path(&img));
        async move { ctx.client.call_bytes(Method::GET, &path).await }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn img(tags: &[&str], digests: &[&str]) -> ImageSummary {
        ImageSummary {
            id: "sha256:0123456789abcdef0123456789abcdef".into(),
            repo_tags: tags.iter().map(|s| s.to_string()).collect(),
            repo_digests: digests.iter().map(|s| s.to_string()).collect(),
            created: now_unix() - 7200,
            size: 4_261_000,
            shared_size: -1,
            containers: -1,
        }
    }

    fn render(format: &str, rows: Vec<Value>) -> String {
        let mut out = Vec::new();
        write_list(&mut out, format, &images_header(), rows).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn images_table_matches_docker() {
        let rows = image_rows(
            &img(&["busybox:latest", "busybox:1.36"], &[]),
            false,
            false,
            true,
        );
        assert_eq!(
            render(&images_format("table", false, false), rows),
            "REPOSITORY   TAG       IMAGE ID       CREATED       SIZE\n\
             busybox      latest    0123456789ab   2 hours ago   4.26MB\n\
             busybox      1.36      0123456789ab   2 hours ago   4.26MB\n"
        );
    }

    #[test]
    fn dangling_and_digest_rows() {
        let rows = image_rows(&img(&[], &[]), false, false, true);
        assert_eq!(
            render("{{.Repository}}:{{.Tag}} {{.Digest}}", rows),
            "<none>:<none> <none>\n"
        );
        let d = format!("alpine@sha256:{}", "b".repeat(64));
        let rows = image_rows(&img(&["alpine:3"], &[&d]), true, true, false);
        assert_eq!(
            render("{{.Repository}} {{.Tag}} {{.Digest}} {{.ID}}", rows),
            format!(
                "alpine 3 sha256:{} sha256:0123456789abcdef0123456789abcdef\n",
                "b".repeat(64)
            )
        );
        let rows = image_rows(&img(&[], &[&d]), false, false, true);
        assert_eq!(
            render("{{.Repository}}|{{.Tag}}|{{.Digest}}", rows),
            "alpine|<none>|\n"
        );
        assert_eq!(images_format("table", true, false), "{{.ID}}");
        assert!(images_format("table {{.ID}}", false, true).ends_with("\t{{.Digest}}"));
    }

    #[test]
    fn history_rows() {
        let h = HistoryItem {
            id: "<missing>".into(),
            created: now_unix() - 120,
            created_by: "/bin/sh -c #(nop) ADD file:abc in / \tmore words that are long enough"
                .into(),
            size: 1_240_000,
            comment: String::new(),
        };
        let mut out = Vec::new();
        write_list(
            &mut out,
            "{{.ID}}|{{.CreatedSince}}|{{.CreatedBy}}|{{.Size}}",
            &Value::Nil,
            [history_row(&h, true, true)],
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "<missing>|2 minutes ago|/bin/sh -c #(nop) ADD file:abc in /  more wo…|1.24MB\n"
        );
        let old = HistoryItem {
            created: 100,
            ..Default::default()
        };
        let r = history_row(&old, true, true);
        let c = crate::template::compile("{{.CreatedSince}} {{.Size}}", true).unwrap();
        assert_eq!(c.render(&r).unwrap(), "N/A 0B");
    }
}
