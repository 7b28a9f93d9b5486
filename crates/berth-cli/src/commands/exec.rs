//! `berth exec`: inspect (existence check) → `POST /containers/{id}/exec` →
//! `POST /exec/{id}/start` hijacked (or detached) → `GET /exec/{id}/json` for the exit code.

use anyhow::{Context, Result, bail};
use clap::{ArgAction, Args};
use hyper::Method;
use serde::{Deserialize, Serialize};

use super::stream::{self, RawMode, Streams};
use super::{Ctx, exit_code};
use crate::client::enc_path;
use crate::optparse::{expand_env, parse_kv_file};

/// `berth exec`
#[derive(Args, Debug)]
#[command(override_usage = "berth exec [OPTIONS] CONTAINER COMMAND [ARG...]")]
pub struct ExecArgs {
    /// Detached mode: run command in the background
    #[arg(short = 'd', long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", action = ArgAction::Set)]
    detach: bool,
    /// Override the key sequence for detaching a container
    #[arg(long = "detach-keys", value_name = "string")]
    detach_keys: Option<String>,
    /// Set environment variables
    #[arg(short = 'e', long, value_name = "list")]
    env: Vec<String>,
    /// Read in a file of environment variables
    #[arg(long = "env-file", value_name = "list")]
    env_file: Vec<String>,
    /// Keep STDIN open even if not attached
    #[arg(short = 'i', long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", action = ArgAction::Set)]
    interactive: bool,
    /// Give extended privileges to the command
    #[arg(long)]
    privileged: bool,
    /// Allocate a pseudo-TTY
    #[arg(short = 't', long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", action = ArgAction::Set)]
    tty: bool,
    /// Username or UID (format: "<name|uid>[:<group|gid>]")
    #[arg(short = 'u', long, value_name = "string")]
    user: Option<String>,
    /// Working directory inside the container
    #[arg(short = 'w', long, value_name = "string")]
    workdir: Option<String>,
    /// CONTAINER COMMAND [ARG...]
    #[arg(value_name = "CONTAINER", required = true, num_args = 2.., trailing_var_arg = true)]
    args: Vec<String>,
}

/// The exec create body, field for field what the docker CLI sends.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ExecConfig {
    user: String,
    privileged: bool,
    tty: bool,
    console_size: Option<[u16; 2]>,
    attach_stdin: bool,
    attach_stderr: bool,
    attach_stdout: bool,
    detach: bool,
    detach_keys: String,
    env: Option<Vec<String>>,
    working_dir: String,
    cmd: Vec<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct ExecStart {
    detach: bool,
    tty: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    console_size: Option<[u16; 2]>,
}

#[derive(Debug, Deserialize)]
struct IdReply {
    #[serde(rename = "Id")]
    id: String,
}

#[derive(Debug, Default, Deserialize)]
struct ExecInspect {
    #[serde(rename = "ExitCode", default)]
    exit_code: Option<i64>,
    #[serde(rename = "Running", default)]
    running: bool,
}

fn exec_config(a: &ExecArgs, console: (u16, u16)) -> Result<ExecConfig> {
    let mut env = Vec::new();
    for f in &a.env_file {
        env.extend(parse_kv_file(f, true)?);
    }
    for e in &a.env {
        env.push(expand_env(e)?);
    }
    let console_size = (a.tty && console != (0, 0)).then_some([console.0, console.1]);
    Ok(ExecConfig {
        user: a.user.clone().unwrap_or_default(),
        privileged: a.privileged,
        tty: a.tty,
        console_size,
        attach_stdin: a.interactive && !a.detach,
        attach_stderr: !a.detach,
        attach_stdout: !a.detach,
        detach: a.detach,
        detach_keys: a.detach_keys.clone().unwrap_or_default(),
        env: if env.is_empty() { None } else { Some(env) },
        working_dir: a.workdir.clone().unwrap_or_default(),
        cmd: a.args[1..].to_vec(),
    })
}

/// `berth exec`.
pub async fn exec(ctx: &Ctx, a: ExecArgs) -> Result<()> {
    let container = &a.args[0];
    let mut config = exec_config(&a, stream::stdout_size())?;
    if config.detach_keys.is_empty()
        && let Some(keys) = super::docker_config_string(ctx, "detachKeys")
    {
        config.detach_keys = keys;
    }
    if config.tty && config.attach_stdin && !stream::stdin_is_tty() {
        bail!("the input device is not a TTY");
    }
    ctx.client
        .call_bytes(
            Method::GET,
            &format!("/containers/{}/json", enc_path(container)),
        )
        .await?;
    let reply = ctx
        .client
        .post_json(
            &format!("/containers/{}/exec", enc_path(container)),
            &config,
        )
        .await?;
    let IdReply { id } =
        serde_json::from_slice(&reply).context("decoding the exec create reply")?;
    let start = ExecStart {
        detach: a.detach,
        tty: a.tty,
        console_size: config.console_size,
    };
    if a.detach {
        ctx.client
            .post_json(&format!("/exec/{id}/start"), &start)
            .await?;
        return Ok(());
    }
    let body = serde_json::to_vec(&start)?;
    let conn = ctx
        .client
        .hijack(Method::POST, &format!("/exec/{id}/start"), Some(body))
        .await?;
    let streams = Streams {
        stdin: config.attach_stdin,
        stdout: true,
        stderr: true,
        tty: a.tty,
    };
    let mut raw = if a.tty && config.attach_stdin {
        Some(RawMode::enable()?)
    } else {
        None
    };
    if a.tty && stream::stdout_is_tty() {
        stream::monitor_tty_size(ctx.client.clone(), format!("/exec/{id}"));
    }
    let escape = stream::escape_for(
        streams,
        Some(&config.detach_keys)
            .filter(|k| !k.is_empty())
            .map(String::as_str),
    )?;
    let pumped = stream::pump(conn, streams, escape).await;
    if let Some(r) = raw.as_mut() {
        r.restore();
    }
    if pumped? == stream::Ended::Detached {
        return Ok(());
    }
    let info: ExecInspect = ctx.client.get_json(&format!("/exec/{id}/json")).await?;
    let code = if info.running {
        0
    } else {
        info.exit_code.unwrap_or(0)
    };
    if code != 0 {
        return Err(exit_code(code as i32));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Probe {
        #[command(flatten)]
        a: ExecArgs,
    }

    #[test]
    fn exec_body_matches_docker() {
        let p = Probe::try_parse_from(["exec", "web", "ls", "-l", "/"]).unwrap();
        let v = serde_json::to_value(exec_config(&p.a, (40, 120)).unwrap()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"User":"","Privileged":false,"Tty":false,"ConsoleSize":null,"AttachStdin":false,
                "AttachStderr":true,"AttachStdout":true,"Detach":false,"DetachKeys":"","Env":null,
                "WorkingDir":"","Cmd":["ls","-l","/"]})
        );
        let p = Probe::try_parse_from(["exec", "-it", "-e", "A=1", "-u", "nobody", "web", "sh"])
            .unwrap();
        let v = serde_json::to_value(exec_config(&p.a, (40, 120)).unwrap()).unwrap();
        assert_eq!(v["ConsoleSize"], serde_json::json!([40, 120]));
        assert_eq!(v["AttachStdin"], true);
        assert_eq!(v["Env"], serde_json::json!(["A=1"]));
        assert_eq!(v["User"], "nobody");
        assert!(Probe::try_parse_from(["exec", "web"]).is_err());
    }
}
