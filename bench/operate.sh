# bench/operate.sh - the "operate" section of bench/run.sh; sourced by it, not run alone:
#   SECTIONS=operate sudo -E bash bench/run.sh
#
# Rows, for berth (berth CLI, and the docker CLI against berthd), dockerd 20.10 and podman 4.3,
# each engine measured right after the other:
#   exec_true        `exec bb-exec true` into a running busybox `sleep` (hyperfine -N)
#   stats_nostream   `stats --no-stream` with NSTATS containers running (hyperfine -N), and
#   api_stats_one    one `GET /containers/{id}/stats?stream=0` at a time through curl (no CLI)
#   health_*         the daemon CPU a healthcheck probe costs: the daemon's CPU time (dockerd +
#                    containerd for docker) over HEALTH_SECS with one container probed every
#                    HEALTH_INTERVAL (`--health-cmd true`), minus the same daemon's CPU time over
#                    HEALTH_SECS just before, without it; divided by the probes the engine
#                    reported (`exec_die` events of the container in that window). The probed
#                    container's shim is reported on its own (its CPU time plus that of the
#                    children it reaped: the probe processes, and runc for docker).
#                    The times are `perf stat -e task-clock -p` (exact, every thread, also those
#                    that exit meanwhile, and the child processes), with two cross-checks from
#                    bench/procstat.py: /proc/PID/stat (every thread, in 10 ms ticks) and the
#                    threads' schedstat (ns, threads alive at the end).
# Every container here runs with `--network none` on all three engines: these rows do not
# depend on networking, which the network section measures.
# Podman has no daemon and runs healthchecks from systemd timers, which this host lacks: its
# health rows are recorded as not applicable.

NSTATS=${NSTATS:-100}
HEALTH_SECS=${HEALTH_SECS:-60}
HEALTH_INTERVAL=${HEALTH_INTERVAL:-1s}

# the command prefix for an engine ("berth-dockercli": the docker CLI against berthd)
ocli() {
  case $1 in
    berth) bcli berth ;;
    berth-dockercli) echo "env DOCKER_HOST=unix://$SOCK $DOCKER_CLI" ;;
    docker) echo "env DOCKER_HOST=unix://$DSOCK $DOCKER_CLI" ;;
    podman) echo "podman --root $PD/root --runroot $PD/run --runtime runc --cgroup-manager cgroupfs" ;;
  esac
}
# whether an engine is up for a later section
engine_ok() {
  case $1 in
    berth) [ -n "$BERTHD_PID" ] && [ -d "/proc/$BERTHD_PID" ] ;;
    docker) [ "$DOCKER_OK" = 1 ] && [ -n "$DOCKERD_PID" ] && [ -d "/proc/$DOCKERD_PID" ] ;;
    podman) [ "$PODMAN_OK" = 1 ] ;;
    *) return 1 ;;
  esac
}
# runs an engine's CLI with a time limit: E ENGINE args...
E() { local e=$1; shift; timeout 300 $(ocli "$e") "$@"; }
via_of() { case $1 in berth) echo berth ;; podman) echo podman ;; *) echo docker-cli ;; esac; }
engine_sock() { case $1 in berth) echo "$SOCK" ;; docker) echo "$DSOCK" ;; esac; }

operate_section() {
  log "== operate section"
  operate_exec
  operate_stats
  operate_health
  operate_cleanup
}

operate_exec() {
  local e c
  for e in berth docker podman; do
    engine_ok "$e" || continue
    E "$e" run -d --network none --name bb-exec busybox sleep 100000 >"$LOGS/$e.bb-exec.log" 2>&1 \
      || rec_fail "$e" exec_true "exec CONTAINER true" "run -d of the exec target failed: $(tail -2 "$LOGS/$e.bb-exec.log")"
  done
  engine_ok berth && {
    bench berth exec_true "exec CONTAINER true" berth -N "$(ocli berth) exec bb-exec true"
    bench berth-dockercli exec_true "exec CONTAINER true" docker-cli -N "$(ocli berth-dockercli) exec bb-exec true"
  }
  engine_ok docker && bench docker exec_true "exec CONTAINER true" docker-cli -N "$(ocli docker) exec bb-exec true"
  engine_ok podman && bench podman exec_true "exec CONTAINER true" podman -N "$(ocli podman) exec bb-exec true"
}

# NSTATS running containers per engine (bb-exec and NSTATS-1 more), one engine at a time: the
# other engines' overlay mounts would otherwise lengthen every daemon's mountinfo reads
operate_stats() {
  local e c i t0 n ids
  for e in berth docker podman; do
    engine_ok "$e" || continue
    log "== $e: $NSTATS running containers for stats --no-stream"
    t0=$(now_ms)
    for i in $(seq 2 "$NSTATS"); do
      E "$e" run -d --network none --name "bb-st-$i" busybox sleep 100000 >/dev/null 2>>"$LOGS/$e.stats-start.log" \
        || { rec_fail "$e" stats_nostream "stats --no-stream" "run -d #$i failed"; break; }
    done
    rec_val "$e" stats_start "$((NSTATS - 1)) x run -d --network none (sequential), total" "$(( $(now_ms) - t0 ))" ms
    n=$(E "$e" ps -q | wc -l)
    rec_val "$e" stats_running "containers running for the stats rows" "$n" ""
    # the table must list them all: a row count that is off is a failure, not a figure
    n=$(E "$e" stats --no-stream 2>"$LOGS/$e.stats-check.log" | tail -n +2 | wc -l)
    rec_val "$e" stats_rows "rows printed by stats --no-stream" "$n" ""
    c=$(ocli "$e")
    bench "$e" stats_nostream "stats --no-stream, $NSTATS running" "$(via_of "$e")" -N "$c stats --no-stream"
    if [ "$e" = berth ]; then
      n=$(E berth-dockercli stats --no-stream 2>>"$LOGS/$e.stats-check.log" | tail -n +2 | wc -l)
      rec_val berth-dockercli stats_rows "rows printed by stats --no-stream" "$n" ""
      bench berth-dockercli stats_nostream "stats --no-stream, $NSTATS running" docker-cli -N "$(ocli berth-dockercli) stats --no-stream"
    fi
    [ "$e" != podman ] && api_times "$e" api_stats_one "GET /containers/{id}/stats?stream=0, one container (curl, per request)" \
      "$(engine_sock "$e")" "/containers/bb-exec/stats?stream=0"
    ids=$(for i in $(seq 2 "$NSTATS"); do echo "bb-st-$i"; done)
    timeout "$BULK_TIMEOUT" $c rm -f $ids >/dev/null 2>&1 || log "rm -f of the stats containers failed on $e"
  done
}

# the shim of a running container, by its full ID on the command line
shim_of() {  # engine container
  local id; id=$(E "$1" inspect -f '{{.Id}}' "$2" 2>/dev/null) || return 0
  case $1 in
    berth) pids_matching "^$BIN/berth-shim run --id $id " | head -1 ;;
    docker) pids_matching "containerd-shim-runc-v2 .*-id $id " | head -1 ;;
  esac
}

# exec_die events of a container in [since, until] (unix seconds with fractions)
probe_count() {  # engine container since until
  local f; f=$(jq -cn --arg c "$2" '{container: [$c], event: ["exec_die"]}')
  curl -sS --max-time 30 --unix-socket "$(engine_sock "$1")" -G "http://x/v1.41/events" \
    --data-urlencode "since=$3" --data-urlencode "until=$4" --data-urlencode "filters=$f" 2>/dev/null |
    jq -s '[.[] | select(.Action == "exec_die")] | length'
}

operate_health() {
  local e
  for e in berth docker; do
    engine_ok "$e" || continue
    operate_health_engine "$e"
  done
  engine_ok podman && rec_fail podman health_daemon_cpu "daemon CPU per healthcheck probe" \
    "not applicable: podman has no daemon and runs healthchecks from systemd timers (no systemd here)" podman
}

operate_health_engine() {
  local e=$1 daemons shim_idle shim t0 t1 probes st=$RESULTS/procstat
  mkdir -p "$st"
  case $e in
    berth) daemons="$BERTHD_PID" ;;
    docker) daemons="$DOCKERD_PID $CONTAINERD_PID" ;;
  esac
  shim_idle=$(shim_of "$e" bb-exec)
  log "== $e: daemon CPU over ${HEALTH_SECS}s idle (daemons $daemons, shim of bb-exec ${shim_idle:-?})"
  python3 "$REPO/bench/procstat.py" snap $daemons $shim_idle >"$st/$e.idle0"
  cpu_window "$st/$e.idle" "$daemons" "$shim_idle"
  python3 "$REPO/bench/procstat.py" snap $daemons $shim_idle >"$st/$e.idle1"
  E "$e" run -d --network none --name bb-health --health-cmd true --health-interval "$HEALTH_INTERVAL" \
    busybox sleep 100000 >"$LOGS/$e.health.log" 2>&1 \
    || { rec_fail "$e" health_daemon_cpu "daemon CPU per healthcheck probe" "run failed: $(tail -2 "$LOGS/$e.health.log")"; return 0; }
  local i status=""
  for i in $(seq 100); do
    status=$(E "$e" inspect -f '{{.State.Health.Status}}' bb-health 2>/dev/null)
    [ "$status" = healthy ] && break
    sleep 0.2
  done
  [ "$status" = healthy ] || { rec_fail "$e" health_daemon_cpu "daemon CPU per healthcheck probe" "bb-health not healthy after 20 s: $status"; return 0; }
  shim=$(shim_of "$e" bb-health)
  log "== $e: daemon CPU over ${HEALTH_SECS}s with bb-health probed every $HEALTH_INTERVAL (shim ${shim:-?})"
  t0=$(date +%s.%N)
  python3 "$REPO/bench/procstat.py" snap $daemons $shim >"$st/$e.busy0"
  cpu_window "$st/$e.busy" "$daemons" "$shim"
  python3 "$REPO/bench/procstat.py" snap $daemons $shim >"$st/$e.busy1"
  t1=$(date +%s.%N)
  probes=$(probe_count "$e" bb-health "$t0" "$t1")
  E "$e" rm -f bb-health >/dev/null 2>&1
  if [ -z "$probes" ] || [ "$probes" = 0 ]; then
    rec_fail "$e" health_daemon_cpu "daemon CPU per healthcheck probe" "no exec_die events of bb-health between $t0 and $t1"
    return 0
  fi
  local idle busy sh shi
  idle=$(python3 "$REPO/bench/procstat.py" delta "$st/$e.idle0" "$st/$e.idle1" $daemons)
  busy=$(python3 "$REPO/bench/procstat.py" delta "$st/$e.busy0" "$st/$e.busy1" $daemons)
  sh=$(python3 "$REPO/bench/procstat.py" delta "$st/$e.busy0" "$st/$e.busy1" $shim)
  shi=$(python3 "$REPO/bench/procstat.py" delta "$st/$e.idle0" "$st/$e.idle1" $shim_idle)
  local pi pb ps psi
  pi=$(perf_ms "$st/$e.idle.daemons.perf"); pb=$(perf_ms "$st/$e.busy.daemons.perf")
  ps=$(perf_ms "$st/$e.busy.shim.perf"); psi=$(perf_ms "$st/$e.idle.shim.perf")
  echo "$e stat/children/sched ns: idle=$idle busy=$busy shim=$sh shim_idle=$shi; perf ms: idle=$pi busy=$pb shim=$ps shim_idle=$psi; probes=$probes" >>"$st/summary.txt"
  local via; via=$(via_of "$e")
  rec_val "$e" health_probes "probes in ${HEALTH_SECS} s (exec_die events), interval $HEALTH_INTERVAL" "$probes" "" "$via"
  if [ -n "$pb" ] && [ -n "$pi" ]; then
    rec_val "$e" health_daemon_idle "daemon CPU while idle, per second (perf task-clock)" \
      "$(awk -v n="$pi" -v s="$HEALTH_SECS" 'BEGIN{printf "%.3f", n/s}')" ms "$via"
    rec_val "$e" health_daemon_cpu "daemon CPU per probe: (probing - idle) / probes (perf task-clock)" \
      "$(awk -v b="$pb" -v i="$pi" -v p="$probes" 'BEGIN{printf "%.2f", (b-i)/p}')" ms "$via"
  fi
  rec_val "$e" health_daemon_cpu_stat "daemon CPU per probe, from utime+stime (10 ms ticks)" \
    "$(awk -v b="${busy%% *}" -v i="${idle%% *}" -v p="$probes" 'BEGIN{printf "%.2f", (b-i)/1e6/p}')" ms "$via"
  rec_val "$e" health_daemon_cpu_sched "daemon CPU per probe, from the live threads' schedstat (ns)" \
    "$(awk -v b="${busy##* }" -v i="${idle##* }" -v p="$probes" 'BEGIN{printf "%.2f", (b-i)/1e6/p}')" ms "$via"
  [ -n "$ps" ] && rec_val "$e" health_shim_cpu "shim CPU per probe, with its children (probe processes, runc) (perf task-clock)" \
    "$(awk -v n="$ps" -v p="$probes" 'BEGIN{printf "%.2f", n/p}')" ms "$via"
  rec_val "$e" health_shim_cpu_stat "shim CPU per probe: utime+stime + the children it reaped" \
    "$(echo "$sh" | awk -v p="$probes" '{printf "%.2f", ($1+$2)/1e6/p}')" ms "$via"
  rec_val "$e" health_shim_idle "shim of an unprobed container over the idle window, total (perf task-clock)" "${psi:-n/a}" ms "$via"
}

# HEALTH_SECS of `perf stat -e task-clock` on the daemons and, separately, on the shim (with
# inherit, as perf counts by default: threads and child processes started meanwhile count, also
# after they exit); without perf, just the wait
cpu_window() {  # out-prefix "daemon pids" shim-pid
  local pids=() p
  if command -v perf >/dev/null; then
    perf stat -x, -e task-clock -p "$(echo $2 | tr ' ' ,)" -o "$1.daemons.perf" -- sleep "$HEALTH_SECS" 2>/dev/null &
    pids+=($!); STARTED_PIDS+=($!)
    if [ -n "$3" ]; then
      perf stat -x, -e task-clock -p "$3" -o "$1.shim.perf" -- sleep "$HEALTH_SECS" 2>/dev/null &
      pids+=($!); STARTED_PIDS+=($!)
    fi
    for p in "${pids[@]}"; do wait "$p"; done
  else
    sleep "$HEALTH_SECS"
  fi
}
# the task-clock of a perf output in ms ("<not counted>": the processes never ran, 0)
perf_ms() { [ -f "$1" ] && awk -F, '$3 ~ /^task-clock/ {print ($1 ~ /^[0-9.]+$/) ? $1 : 0}' "$1"; }

# the section's containers, on every engine that is still up (idempotent; teardown calls it too)
operate_cleanup() {
  local e names
  for e in berth docker podman; do
    engine_ok "$e" || continue
    names=$(E "$e" ps -a --format '{{.Names}}' 2>/dev/null | grep -E '^bb-(exec|health|st-[0-9]+)$' | xargs)
    [ -n "$names" ] && timeout "$BULK_TIMEOUT" $(ocli "$e") rm -f $names >/dev/null 2>&1
  done
  return 0
}
