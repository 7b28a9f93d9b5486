//! `update`: new resource limits and restart policy for a container, checked the way moby
//! checks them, persisted in its host config and, while its process runs, written to its
//! cgroup (v1 controller files or their v2 equivalents).

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use berth_api::models::{ContainerUpdateBody, HostConfig, RestartPolicyNameEnum};

use super::cgroupfs::{self, ContainerCgroup};
use crate::daemon::Daemon;
use crate::error::{ServiceError, ServiceResult};

/// The smallest memory limit or reservation the kernel is given (moby's `linuxMinMemory`).
const MIN_MEMORY: i64 = 6 * 1024 * 1024;
/// The CFS period `--cpus` is expressed against.
const NANO_CPU_PERIOD: i64 = 100_000;

impl Daemon {
    /// `POST /containers/{id}/update`: returns the warnings.
    pub async fn update_container(
        &self,
        reference: &str,
        mut update: ContainerUpdateBody,
    ) -> ServiceResult<Vec<String>> {
        let container = self.containers.get(reference)?;
        let warnings = check_update(&mut update, swap_limit_supported(), cpu_count())?;
        let _guard = container.op_lock.lock().await;
        let cannot = |e: ServiceError| ServiceError {
            kind: e.kind,
            message: format!("Cannot update container {}: {}", container.id, e.message),
        };
        let (before, active) = {
            let r = container.record();
            if matches!(
                r.state.status,
                super::Status::Removing | super::Status::Dead
            ) {
                return Err(cannot(ServiceError::conflict(
                    "container is marked for removal and cannot be \"update\"",
                )));
            }
            // A restarting container has no cgroup: its new limits apply when it starts.
            (
                r.host_config.clone(),
                r.state.status.is_active() && r.state.status != super::Status::Restarting,
            )
        };
        let merged = merge_update(&before, &update).map_err(cannot)?;
        container.record().host_config = merged.clone();
        if let Err(e) = self.persist(&container).await {
            container.record().host_config = before;
            return Err(cannot(e));
        }
        if active {
            let cgroup_path = self.cgroup_path(&container.id);
            let applied = tokio::task::spawn_blocking(move || {
                apply_live(&ContainerCgroup::locate(&cgroup_path)?, &update, &merged)
            })
            .await
            .map_err(ServiceError::from)
            .and_then(|r| r);
            if let Err(e) = applied {
                container.record().host_config = before;
                if let Err(p) = self.persist(&container).await {
                    tracing::warn!(container = %container.id, "cannot restore the host config: {p}");
                }
                return Err(cannot(e));
            }
        }
        self.container_event(&container, "update", HashMap::new());
        Ok(warnings)
    }
}

/// Whether the kernel accounts swap (cgroup v1 `memory.memsw.*`, or cgroup v2).
fn swap_limit_supported() -> bool {
    let Ok(hierarchies) = berth_runtime::cgroups::hierarchies() else {
        return false;
    };
    match hierarchies
        .iter()
        .find(|h| h.controllers.iter().any(|c| c == "memory"))
    {
        Some(h) => h.mount_point.join("memory.memsw.limit_in_bytes").exists(),
        None => hierarchies.iter().any(|h| h.unified),
    }
}

fn cpu_count() -> i64 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as i64)
}

/// moby's `verifyPlatformContainerResources` for an update: errors for impossible values,
/// warnings (and adjustments) for what the host cannot do.
fn check_update(
    u: &mut ContainerUpdateBody,
    swap_supported: bool,
    cpus: i64,
) -> ServiceResult<Vec<String>> {
    let mut warnings = Vec::new();
    let invalid = |m: &str| Err(ServiceError::invalid(m));
    let memory = u.memory.unwrap_or(0);
    let swap = u.memory_swap.unwrap_or(0);
    let reservation = u.memory_reservation.unwrap_or(0);
    if memory != 0 && memory < MIN_MEMORY {
        return invalid("Minimum memory limit allowed is 6MB");
    }
    if memory > 0 && swap != -1 && !swap_supported {
        warnings.push(
            "Your kernel does not support swap limit capabilities or the cgroup is not mounted. Memory limited without swap."
                .to_string(),
        );
        u.memory_swap = Some(-1);
    }
    if memory > 0 && swap > 0 && swap < memory {
        return invalid("Minimum memoryswap limit should be larger than memory limit, see usage");
    }
    if memory > 0 && reservation > 0 && reservation > memory {
        return invalid(
            "Minimum memory limit can not be less than memory reservation limit, see usage",
        );
    }
    if reservation != 0 && reservation < MIN_MEMORY {
        return invalid("Minimum memory reservation allowed is 6MB");
    }
    let nano = u.nano_cpus.unwrap_or(0);
    let period = u.cpu_period.unwrap_or(0);
    let quota = u.cpu_quota.unwrap_or(0);
    if nano > 0 && period > 0 {
        return invalid("Conflicting options: Nano CPUs and CPU Period cannot both be set");
    }
    if nano > 0 && quota > 0 {
        return invalid("Conflicting options: Nano CPUs and CPU Quota cannot both be set");
    }
    if nano < 0 || nano > cpus * 1_000_000_000 {
        return Err(ServiceError::invalid(format!(
            "Range of CPUs is from 0.01 to {cpus}.00, as there are only {cpus} CPUs available"
        )));
    }
    if period != 0 && !(1000..=1_000_000).contains(&period) {
        return invalid(
            "CPU cfs period can not be less than 1ms (i.e. 1000) or larger than 1s (i.e. 1000000)",
        );
    }
    if quota > 0 && quota < 1000 {
        return invalid("CPU cfs quota can not be less than 1ms (i.e. 1000)");
    }
    if let Some(cpuset) = u.cpuset_cpus.as_deref().filter(|c| !c.is_empty()) {
        let requested = parse_cpu_list(cpuset).ok_or_else(|| {
            ServiceError::invalid(format!("Invalid value {cpuset} for cpuset cpus"))
        })?;
        let online = std::fs::read_to_string("/sys/devices/system/cpu/online")
            .unwrap_or_default()
            .trim()
            .to_string();
        if let Some(available) = parse_cpu_list(&online)
            && !requested.is_subset(&available)
        {
            return Err(ServiceError::invalid(format!(
                "Requested CPUs are not available - requested {cpuset}, available: {online}"
            )));
        }
    }
    if let Some(policy) = &u.restart_policy {
        let count = policy.maximum_retry_count.unwrap_or(0);
        let on_failure = policy.name == Some(RestartPolicyNameEnum::ON_FAILURE);
        if count < 0 {
            return invalid("invalid restart policy: maximum retry count cannot be negative");
        }
        if count > 0 && !on_failure {
            return invalid(
                "invalid restart policy: maximum retry count can only be used with 'on-failure'",
            );
        }
    }
    Ok(warnings)
}

/// `0-3,5` as a set of CPU numbers; `None` when malformed.
fn parse_cpu_list(text: &str) -> Option<BTreeSet<u32>> {
    let mut out = BTreeSet::new();
    for part in text.split(',') {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u32, u32) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
                if a > b {
                    return None;
                }
                out.extend(a..=b);
            }
            None => {
                out.insert(part.trim().parse().ok()?);
            }
        }
    }
    Some(out)
}

/// moby's `UpdateContainer`: the new host config, or the conflict that forbids it. Zero
/// values leave a setting as it was.
fn merge_update(current: &HostConfig, u: &ContainerUpdateBody) -> ServiceResult<HostConfig> {
    let conflict = |m: &str| Err(ServiceError::conflict(m));
    let set = |v: Option<i64>| v.filter(|v| *v != 0);
    let cur = |v: Option<i64>| v.unwrap_or(0);
    if set(u.nano_cpus).is_some_and(|n| n > 0) && cur(current.cpu_period) > 0 {
        return conflict(
            "Conflicting options: Nano CPUs cannot be updated as CPU Period has already been set",
        );
    }
    if set(u.nano_cpus).is_some_and(|n| n > 0) && cur(current.cpu_quota) > 0 {
        return conflict(
            "Conflicting options: Nano CPUs cannot be updated as CPU Quota has already been set",
        );
    }
    if set(u.cpu_period).is_some_and(|p| p > 0) && cur(current.nano_cpus) > 0 {
        return conflict(
            "Conflicting options: CPU Period cannot be updated as NanoCPUs has already been set",
        );
    }
    if set(u.cpu_quota).is_some_and(|q| q > 0) && cur(current.nano_cpus) > 0 {
        return conflict(
            "Conflicting options: CPU Quota cannot be updated as NanoCPUs has already been set",
        );
    }
    let mut next = current.clone();
    if let Some(shares) = set(u.cpu_shares) {
        next.cpu_shares = Some(shares);
    }
    if let Some(nano) = set(u.nano_cpus) {
        next.nano_cpus = Some(nano);
    }
    if let Some(period) = set(u.cpu_period) {
        next.cpu_period = Some(period);
    }
    if let Some(quota) = set(u.cpu_quota) {
        next.cpu_quota = Some(quota);
    }
    if let Some(cpus) = u.cpuset_cpus.clone().filter(|c| !c.is_empty()) {
        next.cpuset_cpus = Some(cpus);
    }
    if let Some(mems) = u.cpuset_mems.clone().filter(|c| !c.is_empty()) {
        next.cpuset_mems = Some(mems);
    }
    if let Some(memory) = set(u.memory) {
        // Without a new swap limit the old one stays, so the memory limit must fit under it
        // (docker's default swap limit is twice the memory limit).
        let current_swap = match (cur(current.memory), cur(current.memory_swap)) {
            (m, 0) if m > 0 => m * 2,
            (_, s) => s,
        };
        if memory > current_swap && set(u.memory_swap).is_none() {
            return conflict(
                "Memory limit should be smaller than already set memoryswap limit, update the memoryswap at the same time",
            );
        }
        next.memory = Some(memory);
    }
    if let Some(swap) = set(u.memory_swap) {
        next.memory_swap = Some(swap);
    }
    if let Some(reservation) = set(u.memory_reservation) {
        next.memory_reservation = Some(reservation);
    }
    if let Some(pids) = u.pids_limit {
        next.pids_limit = (pids > 0).then_some(pids);
    }
    if let Some(policy) = u
        .restart_policy
        .as_ref()
        .filter(|p| p.name.is_some_and(|n| n != RestartPolicyNameEnum::EMPTY))
    {
        if current.auto_remove.unwrap_or(false) && policy.name != Some(RestartPolicyNameEnum::NO) {
            return conflict(
                "Restart policy cannot be updated because AutoRemove is enabled for the container",
            );
        }
        next.restart_policy = Some(policy.clone());
    }
    Ok(next)
}

/// Writes the requested values (not the merged ones: what was not asked for stays as the
/// kernel has it) into the cgroup of a running container. `merged` supplies the memory
/// limit a lone swap change is relative to on cgroup v2.
fn apply_live(
    cgroup: &ContainerCgroup,
    u: &ContainerUpdateBody,
    merged: &HostConfig,
) -> ServiceResult<()> {
    if !cgroup.exists() {
        return Err(ServiceError::internal("the container's cgroup is gone"));
    }
    let set = |v: Option<i64>| v.filter(|v| *v != 0);
    let nano = set(u.nano_cpus).filter(|n| *n > 0);
    let (period, quota) = match nano {
        Some(n) => (
            Some(NANO_CPU_PERIOD),
            Some(n * NANO_CPU_PERIOD / 1_000_000_000),
        ),
        None => (set(u.cpu_period), set(u.cpu_quota)),
    };
    let pids = u
        .pids_limit
        .map(|p| if p > 0 { p.to_string() } else { "max".into() });
    if let Some(dir) = cgroup.v2() {
        if let Some(shares) = set(u.cpu_shares) {
            cgroupfs::write(dir, "cpu.weight", &shares_to_weight(shares).to_string())?;
        }
        if period.is_some() || quota.is_some() {
            let (cur_quota, cur_period) = read_cpu_max(dir);
            let quota = quota.map_or(
                cur_quota,
                |q| if q < 0 { "max".into() } else { q.to_string() },
            );
            let period = period.map_or(cur_period, |p| p.to_string());
            cgroupfs::write(dir, "cpu.max", &format!("{quota} {period}"))?;
        }
        if let Some(cpus) = u.cpuset_cpus.as_deref().filter(|c| !c.is_empty()) {
            cgroupfs::write(dir, "cpuset.cpus", cpus)?;
        }
        if let Some(mems) = u.cpuset_mems.as_deref().filter(|c| !c.is_empty()) {
            cgroupfs::write(dir, "cpuset.mems", mems)?;
        }
        if let Some(reservation) = set(u.memory_reservation) {
            cgroupfs::write(dir, "memory.low", &reservation.to_string())?;
        }
        if let Some(memory) = set(u.memory) {
            write_memory_limit(dir, "memory.max", memory, "max")?;
        }
        if let Some(swap) = set(u.memory_swap) {
            // v2 limits swap on its own: memory+swap minus memory.
            let value = match (swap, merged.memory.unwrap_or(0)) {
                (-1, _) | (_, 0) => "max".to_string(),
                (s, m) => (s - m).max(0).to_string(),
            };
            if dir.join("memory.swap.max").exists() {
                cgroupfs::write(dir, "memory.swap.max", &value)?;
            }
        }
        if let Some(pids) = pids {
            cgroupfs::write(dir, "pids.max", &pids)?;
        }
        return Ok(());
    }
    if let Some(dir) = cgroup.v1("cpu") {
        if let Some(shares) = set(u.cpu_shares) {
            cgroupfs::write(dir, "cpu.shares", &shares.to_string())?;
        }
        if let Some(period) = period {
            cgroupfs::write(dir, "cpu.cfs_period_us", &period.to_string())?;
        }
        if let Some(quota) = quota {
            cgroupfs::write(dir, "cpu.cfs_quota_us", &quota.to_string())?;
        }
    }
    if let Some(dir) = cgroup.v1("cpuset") {
        if let Some(cpus) = u.cpuset_cpus.as_deref().filter(|c| !c.is_empty()) {
            cgroupfs::write(dir, "cpuset.cpus", cpus)?;
        }
        if let Some(mems) = u.cpuset_mems.as_deref().filter(|c| !c.is_empty()) {
            cgroupfs::write(dir, "cpuset.mems", mems)?;
        }
    }
    if let Some(dir) = cgroup.v1("memory") {
        if let Some(reservation) = set(u.memory_reservation) {
            cgroupfs::write(dir, "memory.soft_limit_in_bytes", &reservation.to_string())?;
        }
        set_memory_v1(dir, set(u.memory), set(u.memory_swap))?;
    }
    if let (Some(dir), Some(pids)) = (cgroup.v1("pids"), pids) {
        cgroupfs::write(dir, "pids.max", &pids)?;
    }
    Ok(())
}

/// The kernel keeps `memory.limit_in_bytes <= memory.memsw.limit_in_bytes` at every step,
/// so the order of the two writes depends on where the limits move (runc's order).
fn set_memory_v1(dir: &Path, memory: Option<i64>, swap: Option<i64>) -> ServiceResult<()> {
    let has_swap = dir.join("memory.memsw.limit_in_bytes").exists();
    let swap = swap.filter(|_| has_swap);
    if let (Some(_), Some(swap)) = (memory, swap) {
        let current = cgroupfs::read_u64(dir, "memory.limit_in_bytes").unwrap_or(u64::MAX);
        if swap == -1 || current < swap as u64 {
            cgroupfs::write(dir, "memory.memsw.limit_in_bytes", &swap.to_string())?;
            return memory.map_or(Ok(()), |m| {
                write_memory_limit(dir, "memory.limit_in_bytes", m, "-1")
            });
        }
    }
    if let Some(memory) = memory {
        write_memory_limit(dir, "memory.limit_in_bytes", memory, "-1")?;
    }
    if let Some(swap) = swap {
        cgroupfs::write(dir, "memory.memsw.limit_in_bytes", &swap.to_string())?;
    }
    Ok(())
}

/// Writes a memory limit, explaining the kernel's refusal of one below the current usage.
fn write_memory_limit(dir: &Path, file: &str, memory: i64, unlimited: &str) -> ServiceResult<()> {
    let value = if memory < 0 {
        unlimited.to_string()
    } else {
        memory.to_string()
    };
    cgroupfs::write(dir, file, &value).map_err(|e| {
        let usage = cgroupfs::read(dir, "memory.usage_in_bytes")
            .or_else(|| cgroupfs::read(dir, "memory.current"))
            .unwrap_or_default();
        ServiceError::internal(format!(
            "unable to set memory limit to {memory} (current usage: {usage}): {e}"
        ))
    })
}

/// The current `cpu.max` pair (`max 100000` by default).
fn read_cpu_max(dir: &Path) -> (String, String) {
    let text = cgroupfs::read(dir, "cpu.max").unwrap_or_default();
    let mut parts = text.split_ascii_whitespace();
    (
        parts.next().unwrap_or("max").to_string(),
        parts.next().unwrap_or("100000").to_string(),
    )
}

/// CPU shares (2..262144) as a cgroup v2 weight (1..10000), the conversion runc uses.
fn shares_to_weight(shares: i64) -> i64 {
    let shares = shares.clamp(2, 262_144);
    1 + ((shares - 2) * 9999) / 262_142
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_api::models::RestartPolicy;

    fn body(f: impl FnOnce(&mut ContainerUpdateBody)) -> ContainerUpdateBody {
        let mut u = ContainerUpdateBody::default();
        f(&mut u);
        u
    }

    #[test]
    fn checks_follow_moby() {
        let mut u = body(|u| u.memory = Some(1024));
        assert!(check_update(&mut u, true, 2).is_err());
        let mut u = body(|u| {
            u.memory = Some(64 << 20);
            u.memory_swap = Some(32 << 20);
        });
        assert!(check_update(&mut u, true, 2).is_err());
        let mut u = body(|u| u.nano_cpus = Some(3_000_000_000));
        let e = check_update(&mut u, true, 2).unwrap_err();
        assert!(e.message.contains("only 2 CPUs"), "{}", e.message);
        let mut u = body(|u| u.cpu_period = Some(10));
        assert!(check_update(&mut u, true, 2).is_err());
        let mut u = body(|u| u.cpuset_cpus = Some("0-x".into()));
        assert!(check_update(&mut u, true, 2).is_err());
        let mut u = body(|u| {
            u.restart_policy = Some(RestartPolicy {
                name: Some(RestartPolicyNameEnum::ALWAYS),
                maximum_retry_count: Some(3),
            })
        });
        assert!(check_update(&mut u, true, 2).is_err());
        // Without swap accounting the swap limit is dropped with a warning.
        let mut u = body(|u| u.memory = Some(64 << 20));
        let warnings = check_update(&mut u, false, 2).unwrap();
        assert_eq!(warnings.len(), 1);
        assert_eq!(u.memory_swap, Some(-1));
    }

    #[test]
    fn memory_needs_swap_room() {
        let none = HostConfig::default();
        let mem = body(|u| u.memory = Some(64 << 20));
        let e = merge_update(&none, &mem).unwrap_err();
        assert!(e.message.contains("memoryswap"), "{}", e.message);
        let both = body(|u| {
            u.memory = Some(64 << 20);
            u.memory_swap = Some(128 << 20);
        });
        let next = merge_update(&none, &both).unwrap();
        assert_eq!(
            (next.memory, next.memory_swap),
            (Some(64 << 20), Some(128 << 20))
        );
        // Under the default swap limit (twice the old memory limit) no swap is needed.
        let limited = HostConfig {
            memory: Some(100 << 20),
            ..Default::default()
        };
        let next = merge_update(&limited, &body(|u| u.memory = Some(150 << 20))).unwrap();
        assert_eq!(next.memory, Some(150 << 20));
        assert!(merge_update(&limited, &body(|u| u.memory = Some(300 << 20))).is_err());
    }

    #[test]
    fn cpu_options_conflict_with_what_is_set() {
        let nano = HostConfig {
            nano_cpus: Some(1_000_000_000),
            ..Default::default()
        };
        assert!(merge_update(&nano, &body(|u| u.cpu_quota = Some(50_000))).is_err());
        assert!(merge_update(&nano, &body(|u| u.cpu_period = Some(50_000))).is_err());
        let next = merge_update(&nano, &body(|u| u.nano_cpus = Some(500_000_000))).unwrap();
        assert_eq!(next.nano_cpus, Some(500_000_000));
        let quota = HostConfig {
            cpu_quota: Some(50_000),
            ..Default::default()
        };
        assert!(merge_update(&quota, &body(|u| u.nano_cpus = Some(1))).is_err());
    }

    #[test]
    fn restart_policy_and_pids() {
        let auto = HostConfig {
            auto_remove: Some(true),
            ..Default::default()
        };
        let always = body(|u| {
            u.restart_policy = Some(RestartPolicy {
                name: Some(RestartPolicyNameEnum::ALWAYS),
                maximum_retry_count: None,
            })
        });
        assert!(merge_update(&auto, &always).is_err());
        let next = merge_update(&HostConfig::default(), &always).unwrap();
        assert_eq!(
            next.restart_policy.unwrap().name,
            Some(RestartPolicyNameEnum::ALWAYS)
        );
        let unchanged = body(|u| {
            u.restart_policy = Some(RestartPolicy {
                name: Some(RestartPolicyNameEnum::EMPTY),
                maximum_retry_count: Some(0),
            })
        });
        assert!(
            merge_update(&auto, &unchanged)
                .unwrap()
                .restart_policy
                .is_none()
        );
        let pids =
            merge_update(&HostConfig::default(), &body(|u| u.pids_limit = Some(100))).unwrap();
        assert_eq!(pids.pids_limit, Some(100));
        let unlimited = merge_update(&pids, &body(|u| u.pids_limit = Some(-1))).unwrap();
        assert_eq!(unlimited.pids_limit, None);
    }

    #[test]
    fn v1_memory_writes_in_the_order_the_kernel_accepts() {
        let dir = tempfile::tempdir().unwrap();
        let file = |f: &str| std::fs::read_to_string(dir.path().join(f)).unwrap();
        std::fs::write(dir.path().join("memory.limit_in_bytes"), "1000\n").unwrap();
        std::fs::write(dir.path().join("memory.memsw.limit_in_bytes"), "2000\n").unwrap();
        set_memory_v1(dir.path(), Some(67_108_864), Some(134_217_728)).unwrap();
        assert_eq!(file("memory.limit_in_bytes"), "67108864");
        assert_eq!(file("memory.memsw.limit_in_bytes"), "134217728");
        set_memory_v1(dir.path(), Some(-1), Some(-1)).unwrap();
        assert_eq!(file("memory.limit_in_bytes"), "-1");
    }

    #[test]
    fn cpu_lists_and_weights() {
        assert_eq!(
            parse_cpu_list("0-2,5")
                .unwrap()
                .into_iter()
                .collect::<Vec<_>>(),
            vec![0, 1, 2, 5]
        );
        assert!(parse_cpu_list("2-1").is_none());
        assert!(parse_cpu_list("a").is_none());
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(262_144), 10_000);
    }
}
