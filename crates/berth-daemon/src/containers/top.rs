//! `top`: the host's `ps` with the caller's options, keeping the rows of the processes in the
//! container's cgroup (as moby does; the PIDs shown are the host's).

use std::collections::HashMap;

use berth_api::models::ContainerTopResponse;

use super::cgroupfs::ContainerCgroup;
use super::state::Status;
use crate::daemon::Daemon;
use crate::error::{ServiceError, ServiceResult};

impl Daemon {
    /// `GET /containers/{id}/top?ps_args=`: empty arguments mean `-ef`.
    pub async fn top_container(
        &self,
        reference: &str,
        ps_args: &str,
    ) -> ServiceResult<ContainerTopResponse> {
        let container = self.containers.get(reference)?;
        match container.record().state.status {
            Status::Running | Status::Paused => {}
            Status::Restarting => {
                return Err(ServiceError::conflict(format!(
                    "container {} is restarting, wait until the container is running",
                    container.id
                )));
            }
            _ => {
                return Err(ServiceError::conflict(format!(
                    "container {} is not running",
                    container.id
                )));
            }
        }
        let args: Vec<String> = if ps_args.trim().is_empty() {
            vec!["-ef".to_string()]
        } else {
            ps_args.split(' ').map(str::to_string).collect()
        };
        let cgroup_path = self.cgroup_path(&container.id);
        let top = tokio::task::spawn_blocking(move || -> ServiceResult<ContainerTopResponse> {
            let pids = ContainerCgroup::locate(&cgroup_path)?.pids();
            let output = run_ps(&args, &pids)?;
            parse_ps_output(&output, &pids)
        })
        .await??;
        self.container_event(&container, "top", HashMap::new());
        Ok(top)
    }
}

/// Runs `ps ARGS -qPID,...` (cheaper: ps reads only those processes), or `ps ARGS` when that
/// fails (options such as `f` do not combine with `-q`).
fn run_ps(args: &[String], pids: &[i32]) -> ServiceResult<String> {
    let list = pids
        .iter()
        .map(i32::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let first = std::process::Command::new("ps")
        .args(args)
        .arg(format!("-q{list}"))
        .output();
    if let Ok(out) = &first
        && out.status.success()
        && !pids.is_empty()
    {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    let out = std::process::Command::new("ps")
        .args(args)
        .output()
        .map_err(|e| ServiceError::internal(format!("ps: {e}")))?;
    if !out.status.success() {
        // The first line of ps's complaint says what was wrong with the options.
        let stderr = String::from_utf8_lossy(&out.stderr);
        let why = stderr.lines().next().unwrap_or("").trim().to_string();
        let why = if why.is_empty() {
            format!("exit status {}", out.status.code().unwrap_or(-1))
        } else {
            why
        };
        return Err(ServiceError::internal(format!("ps: {why}")));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Keeps the rows whose PID column is one of `pids`, plus the thread rows (`-` PID, from
/// `ps m`) that follow such a row; the last column takes the rest of the line (the command).
fn parse_ps_output(output: &str, pids: &[i32]) -> ServiceResult<ContainerTopResponse> {
    let mut lines = output.split('\n');
    let titles: Vec<String> = lines
        .next()
        .unwrap_or("")
        .split_ascii_whitespace()
        .map(str::to_string)
        .collect();
    let pid_index = titles
        .iter()
        .position(|t| t == "PID")
        .ok_or_else(|| ServiceError::internal("Couldn't find PID field in ps output"))?;
    let mut processes = Vec::new();
    let mut after_container_row = false;
    for line in lines.filter(|l| !l.is_empty()) {
        let fields: Vec<&str> = line.split_ascii_whitespace().collect();
        let Some(pid) = fields.get(pid_index) else {
            continue;
        };
        let keep = if *pid == "-" {
            after_container_row
        } else {
            let pid: i32 = pid
                .parse()
                .map_err(|e| ServiceError::internal(format!("Unexpected pid '{pid}': {e}")))?;
            after_container_row = pids.contains(&pid);
            after_container_row
        };
        if keep {
            let last = titles.len() - 1;
            let mut row: Vec<String> = fields.iter().take(last).map(|f| f.to_string()).collect();
            row.push(fields.get(last..).unwrap_or_default().join(" "));
            processes.push(row);
        }
    }
    Ok(ContainerTopResponse {
        titles: Some(titles),
        processes: Some(processes),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PS: &str = "UID        PID  PPID  C STIME TTY          TIME CMD\n\
                      root         1     0  0 01:09 ?        00:00:01 /sbin/init\n\
                      root      4242  4200  0 12:00 ?        00:00:00 sleep 1000 --long arg\n\
                      root         -     -  0 12:00 -        00:00:00 -\n\
                      root      4300  4242  0 12:00 ?        00:00:00 sh -c x\n";

    #[test]
    fn rows_of_the_container_only() {
        let top = parse_ps_output(PS, &[4242]).unwrap();
        assert_eq!(
            top.titles.unwrap(),
            ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]
        );
        let rows = top.processes.unwrap();
        assert_eq!(rows.len(), 2, "{rows:?}");
        assert_eq!(rows[0][1], "4242");
        assert_eq!(rows[0][7], "sleep 1000 --long arg");
        // The thread row follows its process.
        assert_eq!(rows[1][1], "-");
    }

    #[test]
    fn output_without_pid_column_is_an_error() {
        assert!(parse_ps_output("USER COMMAND\nroot x\n", &[1]).is_err());
        assert!(parse_ps_output("PID CMD\nabc x\n", &[1]).is_err());
    }

    #[test]
    fn ps_runs_here() {
        let me = std::process::id() as i32;
        let out = run_ps(&["-ef".to_string()], &[me]).unwrap();
        let top = parse_ps_output(&out, &[me]).unwrap();
        assert_eq!(top.processes.unwrap().len(), 1);
        assert!(run_ps(&["--bogus-option".to_string()], &[me]).is_err());
    }
}
