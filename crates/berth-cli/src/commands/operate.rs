//! `berth pause`, `berth unpause` and `berth update`.

use anyhow::{Result, anyhow, bail};
use berth_api::models::{ContainerUpdateBody, ContainerUpdateResponse};
use clap::Args;
use hyper::Method;

use super::{Ctx, StatusError, for_each_arg, print_out};
use crate::client::enc_path;
use crate::optparse::{parse_mem_swap, parse_nano_cpus, parse_ram, parse_restart};

/// `berth pause` and `berth unpause`
#[derive(Args, Debug)]
pub struct PauseArgs {
    /// CONTAINER [CONTAINER...]
    #[arg(value_name = "CONTAINER", required = true)]
    containers: Vec<String>,
}

/// `berth update`
#[derive(Args, Debug, Default)]
pub struct UpdateArgs {
    /// Block IO (relative weight), between 10 and 1000, or 0 to disable (default 0)
    #[arg(long = "blkio-weight", value_name = "uint16")]
    blkio_weight: Option<u16>,
    /// Limit CPU CFS (Completely Fair Scheduler) period
    #[arg(long = "cpu-period", value_name = "int")]
    cpu_period: Option<i64>,
    /// Limit CPU CFS (Completely Fair Scheduler) quota
    #[arg(long = "cpu-quota", value_name = "int", allow_hyphen_values = true)]
    cpu_quota: Option<i64>,
    /// Limit the CPU real-time period in microseconds
    #[arg(long = "cpu-rt-period", value_name = "int")]
    cpu_rt_period: Option<i64>,
    /// Limit the CPU real-time runtime in microseconds
    #[arg(long = "cpu-rt-runtime", value_name = "int")]
    cpu_rt_runtime: Option<i64>,
    /// CPU shares (relative weight)
    #[arg(short = 'c', long = "cpu-shares", value_name = "int")]
    cpu_shares: Option<i64>,
    /// Number of CPUs
    #[arg(long, value_name = "decimal", value_parser = parse_nano_cpus)]
    cpus: Option<i64>,
    /// CPUs in which to allow execution (0-3, 0,1)
    #[arg(long = "cpuset-cpus", value_name = "string")]
    cpuset_cpus: Option<String>,
    /// MEMs in which to allow execution (0-3, 0,1)
    #[arg(long = "cpuset-mems", value_name = "string")]
    cpuset_mems: Option<String>,
    /// Memory limit
    #[arg(short = 'm', long, value_name = "bytes", value_parser = parse_ram)]
    memory: Option<i64>,
    /// Memory soft limit
    #[arg(long = "memory-reservation", value_name = "bytes", value_parser = parse_ram)]
    memory_reservation: Option<i64>,
    /// Swap limit equal to memory plus swap: -1 to enable unlimited swap
    #[arg(long = "memory-swap", value_name = "bytes", value_parser = parse_mem_swap, allow_hyphen_values = true)]
    memory_swap: Option<i64>,
    /// Tune container pids limit (set -1 for unlimited)
    #[arg(long = "pids-limit", value_name = "int", allow_hyphen_values = true)]
    pids_limit: Option<i64>,
    /// Restart policy to apply when a container exits
    #[arg(long, value_name = "string")]
    restart: Option<String>,
    /// CONTAINER [CONTAINER...]
    #[arg(value_name = "CONTAINER", required = true)]
    containers: Vec<String>,
}

/// `berth pause`.
pub async fn pause(ctx: &Ctx, a: PauseArgs) -> Result<()> {
    post_each(ctx, &a.containers, "pause").await
}

/// `berth unpause`.
pub async fn unpause(ctx: &Ctx, a: PauseArgs) -> Result<()> {
    post_each(ctx, &a.containers, "unpause").await
}

async fn post_each(ctx: &Ctx, containers: &[String], action: &str) -> Result<()> {
    for_each_arg(containers, |c| async move {
        ctx.client
            .call(
                Method::POST,
                &format!("/containers/{}/{action}", enc_path(&c)),
            )
            .await?;
        Ok(Some(c))
    })
    .await
}

/// The update body from the flags; `None` when no flag was given.
fn update_body(a: &UpdateArgs) -> Result<Option<ContainerUpdateBody>> {
    let given = a.blkio_weight.is_some()
        || a.cpu_period.is_some()
        || a.cpu_quota.is_some()
        || a.cpu_rt_period.is_some()
        || a.cpu_rt_runtime.is_some()
        || a.cpu_shares.is_some()
        || a.cpus.is_some()
        || a.cpuset_cpus.is_some()
        || a.cpuset_mems.is_some()
        || a.memory.is_some()
        || a.memory_reservation.is_some()
        || a.memory_swap.is_some()
        || a.pids_limit.is_some()
        || a.restart.is_some();
    if !given {
        return Ok(None);
    }
    let restart_policy = a
        .restart
        .as_deref()
        .filter(|r| !r.is_empty())
        .map(parse_restart)
        .transpose()?;
    Ok(Some(ContainerUpdateBody {
        blkio_weight: a.blkio_weight,
        cpu_period: a.cpu_period,
        cpu_quota: a.cpu_quota,
        cpu_realtime_period: a.cpu_rt_period,
        cpu_realtime_runtime: a.cpu_rt_runtime,
        cpu_shares: a.cpu_shares,
        nano_cpus: a.cpus,
        cpuset_cpus: a.cpuset_cpus.clone(),
        cpuset_mems: a.cpuset_mems.clone(),
        memory: a.memory,
        memory_reservation: a.memory_reservation,
        memory_swap: a.memory_swap,
        pids_limit: a.pids_limit,
        restart_policy,
        ..Default::default()
    }))
}

/// `berth update`: prints each container updated, then the daemon's warnings.
pub async fn update(ctx: &Ctx, a: UpdateArgs) -> Result<()> {
    let Some(body) = update_body(&a)? else {
        bail!("You must provide one or more flags when using this command.");
    };
    let mut out = String::new();
    let mut warnings = Vec::new();
    let mut errors = Vec::new();
    for c in &a.containers {
        let reply = ctx
            .client
            .post_json(&format!("/containers/{}/update", enc_path(c)), &body)
            .await
            .and_then(|bytes| {
                serde_json::from_slice::<ContainerUpdateResponse>(&bytes)
                    .map_err(|e| anyhow!("decoding the update reply: {e}"))
            });
        match reply {
            Ok(r) => {
                out.push_str(c);
                out.push('\n');
                warnings.extend(r.warnings.unwrap_or_default());
            }
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    if !warnings.is_empty() {
        out.push_str(&warnings.join("\n"));
        out.push('\n');
    }
    print_out(out.as_bytes())?;
    if errors.is_empty() {
        Ok(())
    } else {
        Err(anyhow::Error::new(StatusError {
            code: 1,
            message: Some(errors.join("\n")),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        update: UpdateArgs,
    }

    #[test]
    fn flags_become_the_update_body() {
        let cli = Cli::parse_from([
            "update",
            "-m",
            "64m",
            "--memory-swap",
            "-1",
            "--cpus",
            "0.5",
            "--pids-limit",
            "-1",
            "--restart",
            "on-failure:3",
            "web",
        ]);
        let body = update_body(&cli.update).unwrap().unwrap();
        assert_eq!(body.memory, Some(64 << 20));
        assert_eq!(body.memory_swap, Some(-1));
        assert_eq!(body.nano_cpus, Some(500_000_000));
        assert_eq!(body.pids_limit, Some(-1));
        assert_eq!(body.restart_policy.unwrap().maximum_retry_count, Some(3));
        let json = serde_json::to_string(&update_body(&cli.update).unwrap().unwrap()).unwrap();
        assert!(json.contains("\"Memory\":67108864"), "{json}");
        let none = Cli::parse_from(["update", "web"]);
        assert!(update_body(&none.update).unwrap().is_none());
    }
}
