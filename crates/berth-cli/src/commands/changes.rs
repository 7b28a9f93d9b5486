//! `berth commit` and `berth diff`: a container's filesystem changes, as an image or a list.

use anyhow::{Result, bail};
use clap::{ArgAction, Args};
use hyper::Method;
use serde::Deserialize;

use super::{Ctx, print_out};
use crate::client::{enc_path, query};
use crate::reference::Reference;

/// `berth commit`
#[derive(Args, Debug)]
pub struct CommitArgs {
    /// Author (e.g., "John Hannibal Smith <hannibal@a-team.com>")
    #[arg(short = 'a', long, value_name = "string")]
    author: Option<String>,
    /// Apply Dockerfile instruction to the created image
    #[arg(short = 'c', long = "change", value_name = "list")]
    changes: Vec<String>,
    /// Commit message
    #[arg(short = 'm', long, value_name = "string")]
    message: Option<String>,
    /// Pause container during commit
    #[arg(short = 'p', long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "true", action = ArgAction::Set)]
    pause: bool,
    /// CONTAINER
    #[arg(value_name = "CONTAINER")]
    container: String,
    /// REPOSITORY[:TAG]
    #[arg(value_name = "REPOSITORY[:TAG]")]
    reference: Option<String>,
}

/// `berth diff`
#[derive(Args, Debug)]
pub struct DiffArgs {
    /// CONTAINER
    #[arg(value_name = "CONTAINER")]
    container: String,
}

#[derive(Debug, Deserialize)]
struct IdReply {
    #[serde(rename = "Id")]
    id: String,
}

#[derive(Debug, Deserialize)]
struct ChangeItem {
    #[serde(rename = "Path")]
    path: String,
    #[serde(rename = "Kind")]
    kind: u8,
}

/// The query of `POST /commit`, with the docker CLI's parameters and order.
fn commit_query(a: &CommitArgs) -> Result<String> {
    let (repo, tag) = match a.reference.as_deref().filter(|r| !r.is_empty()) {
        None => (String::new(), String::new()),
        Some(r) => {
            let reference = Reference::parse(r)?;
            if reference.digest.is_some() {
                bail!("refusing to create a tag with a digest reference");
            }
            let reference = reference.with_default_tag();
            (reference.name(), reference.tag.clone().unwrap_or_default())
        }
    };
    let mut q = vec![
        ("container", a.container.clone()),
        ("repo", repo),
        ("tag", tag),
        ("comment", a.message.clone().unwrap_or_default()),
        ("author", a.author.clone().unwrap_or_default()),
    ];
    q.extend(a.changes.iter().map(|c| ("changes", c.clone())));
    if !a.pause {
        q.push(("pause", "0".to_string()));
    }
    Ok(query(&q))
}

/// `berth commit`: prints the new image's ID.
pub async fn commit(ctx: &Ctx, a: CommitArgs) -> Result<()> {
    let path = format!("/commit{}", commit_query(&a)?);
    let body = ctx.client.call_bytes(Method::POST, &path).await?;
    let reply: IdReply = serde_json::from_slice(&body)?;
    print_out(format!("{}\n", reply.id).as_bytes())
}

/// `berth diff`: `C /etc`, `A /etc/x`, `D /tmp/y`, in the daemon's order.
pub async fn diff(ctx: &Ctx, a: DiffArgs) -> Result<()> {
    let body = ctx
        .client
        .call_bytes(
            Method::GET,
            &format!("/containers/{}/changes", enc_path(&a.container)),
        )
        .await?;
    let changes: Option<Vec<ChangeItem>> = serde_json::from_slice(&body)?;
    print_out(render_changes(&changes.unwrap_or_default()).as_bytes())
}

fn render_changes(changes: &[ChangeItem]) -> String {
    changes
        .iter()
        .map(|c| {
            let kind = match c.kind {
                0 => "C",
                1 => "A",
                2 => "D",
                _ => "?",
            };
            format!("{kind} {}\n", c.path)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        commit: CommitArgs,
    }

    fn parse(args: &[&str]) -> CommitArgs {
        Cli::try_parse_from(std::iter::once("commit").chain(args.iter().copied()))
            .unwrap()
            .commit
    }

    #[test]
    fn commit_sends_the_docker_clis_query() {
        let q = commit_query(&parse(&[
            "-a",
            "me",
            "-m",
            "msg",
            "-c",
            "CMD [\"x\"]",
            "web",
            "snap",
        ]))
        .unwrap();
        assert_eq!(
            q,
            "?container=web&repo=docker.io%2Flibrary%2Fsnap&tag=latest&comment=msg&author=me&changes=CMD%20%5B%22x%22%5D"
        );
        let q = commit_query(&parse(&["--pause=false", "web", "reg:5000/a/b:v1"])).unwrap();
        assert_eq!(
            q,
            "?container=web&repo=reg%3A5000%2Fa%2Fb&tag=v1&comment=&author=&pause=0"
        );
        let q = commit_query(&parse(&["web"])).unwrap();
        assert_eq!(q, "?container=web&repo=&tag=&comment=&author=");
        assert!(commit_query(&parse(&["web", "Bad:Name"])).is_err());
    }

    #[test]
    fn changes_render_as_docker_prints_them() {
        let items: Vec<ChangeItem> = serde_json::from_str(
            r#"[{"Path":"/etc","Kind":0},{"Path":"/etc/x","Kind":1},{"Path":"/tmp/y","Kind":2}]"#,
        )
        .unwrap();
        assert_eq!(render_changes(&items), "C /etc\nA /etc/x\nD /tmp/y\n");
    }
}
