//! Moving images in and out: pull, push, save, load and import.

use std::os::fd::AsFd;

use anyhow::{Context, Result, bail};
use clap::{ArgAction, Args};
use hyper::{Method, header};

use super::progress::display_response;
use super::stream::{is_tty, stdin_is_tty, stdout_is_tty};
use super::{Ctx, print_out};
use crate::client::{self, enc_path, for_each_chunk, query};
use crate::reference::Reference;

/// `berth pull`
#[derive(Args, Debug)]
pub struct PullArgs {
    /// Download all tagged images in the repository
    #[arg(short = 'a', long = "all-tags")]
    all_tags: bool,
    /// Skip image verification
    #[arg(long = "disable-content-trust", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "true", action = ArgAction::Set)]
    disable_content_trust: bool,
    /// Set platform if server is multi-platform capable
    #[arg(long, value_name = "string")]
    platform: Option<String>,
    /// Suppress verbose output
    #[arg(short = 'q', long)]
    quiet: bool,
    /// NAME[:TAG|@DIGEST]
    #[arg(value_name = "NAME[:TAG|@DIGEST]")]
    name: String,
}

/// `berth push`
#[derive(Args, Debug)]
pub struct PushArgs {
    /// Push all tags of an image to the repository
    #[arg(short = 'a', long = "all-tags")]
    all_tags: bool,
    /// Skip image signing
    #[arg(long = "disable-content-trust", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "true", action = ArgAction::Set)]
    disable_content_trust: bool,
    /// Push a platform-specific manifest as a single-platform image to the registry
    #[arg(long, value_name = "string")]
    platform: Option<String>,
    /// Suppress verbose output
    #[arg(short = 'q', long)]
    quiet: bool,
    /// NAME[:TAG]
    #[arg(value_name = "NAME[:TAG]")]
    name: String,
}

/// `berth save`
#[derive(Args, Debug)]
pub struct SaveArgs {
    /// Write to a file, instead of STDOUT
    #[arg(short = 'o', long, value_name = "string")]
    output: Option<String>,
    /// Save only the given platform variant
    #[arg(long, value_name = "string")]
    platform: Option<String>,
    /// IMAGE [IMAGE...]
    #[arg(value_name = "IMAGE", required = true)]
    images: Vec<String>,
}

/// `berth load`
#[derive(Args, Debug)]
pub struct LoadArgs {
    /// Read from tar archive file, instead of STDIN
    #[arg(short = 'i', long, value_name = "string")]
    input: Option<String>,
    /// Load only the given platform variant
    #[arg(long, value_name = "string")]
    platform: Option<String>,
    /// Suppress the load output
    #[arg(short = 'q', long)]
    quiet: bool,
}

/// `berth import`
#[derive(Args, Debug)]
pub struct ImportArgs {
    /// Apply Dockerfile instruction to the created image
    #[arg(short = 'c', long, value_name = "list")]
    change: Vec<String>,
    /// Set commit message for imported image
    #[arg(short = 'm', long, value_name = "string")]
    message: Option<String>,
    /// Set platform if server is multi-platform capable
    #[arg(long, value_name = "string")]
    platform: Option<String>,
    /// file|URL|-
    #[arg(value_name = "file|URL|-")]
    source: String,
    /// [REPOSITORY[:TAG]]
    #[arg(value_name = "REPOSITORY[:TAG]")]
    reference: Option<String>,
}

/// Resolves `name` for pull/push: `tag can't be used with --all-tags/-a`, default `latest`.
fn resolve(name: &str, all: bool, quiet: bool, out: &mut String) -> Result<Reference> {
    let r = Reference::parse(name)?;
    let name_only = r.tag.is_none() && r.digest.is_none();
    if all && !name_only {
        bail!("tag can't be used with --all-tags/-a");
    }
    if !all && name_only {
        if !quiet {
            out.push_str("Using default tag: latest\n");
        }
        return Ok(r.with_default_tag());
    }
    Ok(r)
}

/// `berth pull`.
pub async fn pull(ctx: &Ctx, a: PullArgs) -> Result<()> {
    let mut pre = String::new();
    let r = resolve(&a.name, a.all_tags, a.quiet, &mut pre)?;
    print_out(pre.as_bytes())?;
    let mut q = vec![("fromImage", r.name()), ("tag", r.api_tag())];
    if let Some(p) = &a.platform {
        q.push(("platform", p.clone()));
    }
    let req = ctx
        .client
        .request(Method::POST, &format!("/images/create{}", query(&q)))
        .header(
            "X-Registry-Auth",
            super::registry::encoded_auth(ctx, &r.auth_key()),
        )
        .body(client::empty())?;
    let resp = ctx.client.send(req).await?;
    let mut stdout = std::io::stdout();
    let mut sink = std::io::sink();
    let out: &mut dyn std::io::Write = if a.quiet { &mut sink } else { &mut stdout };
    display_response(resp, out, !a.quiet && stdout_is_tty(), |_| {}).await?;
    print_out(format!("{}\n", r.full_string()).as_bytes())
}

/// `berth push`.
pub async fn push(ctx: &Ctx, a: PushArgs) -> Result<()> {
    let mut pre = String::new();
    let r = resolve(&a.name, a.all_tags, a.quiet, &mut pre)?;
    print_out(pre.as_bytes())?;
    let mut q = Vec::new();
    if let Some(t) = &r.tag {
        q.push(("tag", t.clone()));
    }
    if let Some(p) = &a.platform {
        q.push(("platform", p.clone()));
    }
    let req = ctx
        .client
        .request(
            Method::POST,
            &format!("/images/{}/push{}", enc_path(&r.name()), query(&q)),
        )
        .header(
            "X-Registry-Auth",
            super::registry::encoded_auth(ctx, &r.auth_key()),
        )
        .body(client::empty())?;
    let resp = ctx.client.send(req).await?;
    let mut stdout = std::io::stdout();
    let mut sink = std::io::sink();
    let out: &mut dyn std::io::Write = if a.quiet { &mut sink } else { &mut stdout };
    display_response(resp, out, !a.quiet && stdout_is_tty(), |_| {}).await?;
    if a.quiet {
        print_out(format!("{}\n", r.full_string()).as_bytes())?;
    }
    Ok(())
}

/// `berth save`.
pub async fn save(ctx: &Ctx, a: SaveArgs) -> Result<()> {
    if a.output.is_none() && stdout_is_tty() {
        bail!("cowardly refusing to save to a terminal. Use the -o flag or redirect");
    }
    let mut q: Vec<(&str, String)> = a.images.iter().map(|i| ("names", i.clone())).collect();
    if let Some(p) = &a.platform {
        q.push(("platform", p.clone()));
    }
    let resp = ctx
        .client
        .call(Method::GET, &format!("/images/get{}", query(&q)))
        .await?;
    super::container::save_stream(resp, a.output.as_deref()).await
}

/// `berth load`: streams the archive (chunked) and shows the daemon's messages.
pub async fn load(ctx: &Ctx, a: LoadArgs) -> Result<()> {
    let body = match &a.input {
        Some(path) => {
            let f = tokio::fs::File::open(path)
                .await
                .with_context(|| format!("open {path}"))?;
            client::streamed(f)
        }
        None => {
            if stdin_is_tty() {
                bail!("requested load from stdin, but stdin is empty");
            }
            client::streamed(tokio::io::stdin())
        }
    };
    let quiet = a.quiet || !stdout_is_tty();
    let mut q = Vec::new();
    if quiet {
        q.push(("quiet", "1".to_string()));
    }
    if let Some(p) = &a.platform {
        q.push(("platform", p.clone()));
    }
    let req = ctx
        .client
        .request(Method::POST, &format!("/images/load{}", query(&q)))
        .header(header::CONTENT_TYPE, "application/x-tar")
        .body(body)?;
    let resp = ctx.client.send(req).await?;
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes() == b"application/json");
    let mut stdout = std::io::stdout();
    if is_json {
        let terminal = is_tty(stdout.as_fd());
        return display_response(resp, &mut stdout, terminal, |_| {}).await;
    }
    for_each_chunk(resp, |c| Ok(std::io::Write::write_all(&mut stdout, c)?)).await
}

/// `berth import`: `fromSrc=-` with the file (or stdin) as the body, or `fromSrc=<URL>`.
pub async fn import(ctx: &Ctx, a: ImportArgs) -> Result<()> {
    if let Some(r) = &a.reference {
        Reference::parse(r)?;
    }
    let is_url = a.source.starts_with("http://") || a.source.starts_with("https://");
    let from_src = if is_url {
        a.source.clone()
    } else {
        "-".to_string()
    };
    let mut q = vec![("fromSrc", from_src)];
    if let Some(r) = &a.reference {
        q.push(("repo", r.clone()));
    }
    for c in &a.change {
        q.push(("changes", c.clone()));
    }
    if let Some(m) = &a.message {
        q.push(("message", m.clone()));
    }
    if let Some(p) = &a.platform {
        q.push(("platform", p.clone()));
    }
    let body = if is_url {
        client::empty()
    } else if a.source == "-" {
        client::streamed(tokio::io::stdin())
    } else {
        let f = tokio::fs::File::open(&a.source)
            .await
            .with_context(|| format!("open {}", a.source))?;
        client::streamed(f)
    };
    let req = ctx
        .client
        .request(Method::POST, &format!("/images/create{}", query(&q)))
        .header(header::CONTENT_TYPE, "text/plain")
        .body(body)?;
    let resp = ctx.client.send(req).await?;
    let mut stdout = std::io::stdout();
    let terminal = stdout_is_tty();
    display_response(resp, &mut stdout, terminal, |_| {}).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pull_references_resolve_like_docker() {
        let mut out = String::new();
        let r = resolve("busybox", false, false, &mut out).unwrap();
        assert_eq!(out, "Using default tag: latest\n");
        assert_eq!(r.full_string(), "docker.io/library/busybox:latest");
        let mut out = String::new();
        let r = resolve("busybox:1.36", false, false, &mut out).unwrap();
        assert!(out.is_empty());
        assert_eq!(
            (r.name(), r.api_tag()),
            ("docker.io/library/busybox".into(), "1.36".into())
        );
        assert!(resolve("busybox:1", true, false, &mut String::new()).is_err());
        let r = resolve("busybox", true, false, &mut String::new()).unwrap();
        assert_eq!(r.api_tag(), "");
    }
}
