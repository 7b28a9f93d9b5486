#!/usr/bin/env bash
# bench/run.sh - engine-core benchmarks for berth, side by side with Docker 20.10 and Podman 4.3.
#
# Builds release binaries, starts a private berthd (own socket, data root, exec root under
# /tmp/berth-bench-$$), makes a busybox image from the host's static busybox, measures:
#   a. `run --rm busybox true` latency (berth CLI, docker CLI against berthd, --runtime runc)
#   b. daemon RSS/PSS idle, RSS/PSS per running container (NCONT x `run -d busybox sleep`)
#   c. NSTART x `run -d` wall time, `ps -a` with NPS created containers
#   d. a phase breakdown of one `run --rm` (strace landmarks on a second, traced berthd)
# then the same rows for dockerd 20.10 (private daemon, --network none) and podman 4.3
# (private storage, runc), and tears everything down by PID, mounts, cgroups, even on error.
# Those are the "core" section. Two more sections measure the same three engines in the same
# run, from the same setup and teardown (when core runs too, they come after it and start the
# daemons it stopped again):
#   operate  (bench/operate.sh): `exec CONTAINER true`, `stats --no-stream` with NSTATS running,
#            the daemon CPU one healthcheck probe costs
#   network  (bench/network.sh): `run --rm` on a user bridge network against `--network none`,
#            container-to-container TCP throughput (iperf3) against two plain veth namespaces,
#            published-port throughput from the host (127.0.0.1 and the host's own address)
#
# Usage:   sudo bash bench/run.sh                          # the core section, as before
#          SECTIONS="operate network" sudo -E bash bench/run.sh
# Env knobs (all optional):
#   SECTIONS=core         which sections run, any of "core operate network" (default: core only,
#                         so that the engine-core figures keep their setup and duration)
#   RUNS=20 WARMUP=3      hyperfine runs / warmups for every latency row
#   NCONT=50              running containers for the RSS/PSS rows
#   NSTART=100            containers for the "start N with run -d" row
#   NPS=1000              created containers for the `ps -a` row (0 = skip)
#   SKIP_DOCKER=1         skip dockerd rows          SKIP_PODMAN=1   skip podman rows
#   SKIP_BUILD=1          use the existing release binaries (in $CARGO_TARGET_DIR, default target/)
#   CARGO_TARGET_DIR=dir  where the release build goes and the binaries are taken from
#   BERTH_BRIDGE=bbench0 BERTH_POOL=base=10.215.0.0/22,size=24
#                         the benchmark berthd's default bridge and address pool (private, so that
#                         it never shares kernel state with other daemons; the traced berthd of the
#                         breakdown uses bbencht0 and the next /22); removed again at teardown
#   BREAKDOWN=0           skip the strace phase breakdown (default 1)
#   BREAKDOWN_RUNS=10     traced `run --rm` runs per CLI for the breakdown
#   RESULTS=dir           where results go (default /tmp/berth-bench-results-<date>)
#   KEEP=1                keep $BENCH (daemon data) after the run
#   QUIET_LOAD=1.5 QUIET_WAIT=120   wait up to QUIET_WAIT s for load1 <= QUIET_LOAD first
#   DOCKER_CLI=/usr/local/bin/docker  docker CLI used against berthd and dockerd
#   APT=0                 never apt-get install docker.io/podman (then rows are skipped)
#   BULK_TIMEOUT=900      seconds allowed for one bulk rm/prune before it is recorded as FAILED
#   operate:  NSTATS=100 (running containers for `stats --no-stream`), HEALTH_SECS=60 (length of
#             the idle and the probing CPU windows), HEALTH_INTERVAL=1s
#   network:  IPERF_SECS=5 (measured seconds per iperf3 test, after 1 s left out), IPERF_ROUNDS=5
#             (rounds over all paths, interleaved), NET_RUNS=$RUNS (interleaved run --rm pairs),
#             NET_SUBNET_BASE=10.215 (the section uses <base>.8.0/24 .. <base>.11.0/24),
#             PORT_BASE=15201 (host ports: berth, docker, podman = base, +1, +2)
# Output: $RESULTS/summary.md (side-by-side table), breakdown.txt, results.tsv, json/, logs/, trace/;
# procstat/ (operate: the healthcheck CPU windows) and iperf/ (network: every iperf3 JSON).
# The operate and network sections also need perf (for exact CPU times; without it only the
# /proc figures are recorded), iperf3 and iproute2 (iperf3 is apt-get installed when missing).
# Needs: bash, hyperfine, strace, curl, jq, python3; docker CLI (any recent) for the docker rows.
set -uo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/lib.sh
. "$REPO/bench/lib.sh"
# shellcheck source=bench/operate.sh
. "$REPO/bench/operate.sh"
# shellcheck source=bench/network.sh
. "$REPO/bench/network.sh"
SECTIONS=${SECTIONS:-core}
has_section() { [[ " $SECTIONS " == *" $1 "* ]]; }
TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
BERTH_BRIDGE=${BERTH_BRIDGE:-bbench0}
BERTH_POOL=${BERTH_POOL:-base=10.215.0.0/22,size=24}
TRACED_BRIDGE=bbencht0
TRACED_POOL=base=10.215.4.0/22,size=24
BRIDGES_BEFORE=""
RUNS=${RUNS:-20}
WARMUP=${WARMUP:-3}
NCONT=${NCONT:-50}
NSTART=${NSTART:-100}
NPS=${NPS:-1000}
SKIP_DOCKER=${SKIP_DOCKER:-0}
SKIP_PODMAN=${SKIP_PODMAN:-0}
BREAKDOWN=${BREAKDOWN:-1}
BREAKDOWN_RUNS=${BREAKDOWN_RUNS:-10}
DOCKER_CLI=${DOCKER_CLI:-/usr/local/bin/docker}
[ -x "$DOCKER_CLI" ] || DOCKER_CLI=$(command -v docker || echo /usr/bin/docker)
# Short on purpose: berth puts <exec-root>/shims/<64 hex>/shim.sock in a sockaddr_un (108 bytes).
BENCH=/tmp/berth-bench-$$
RESULTS=${RESULTS:-/tmp/berth-bench-results-$(date -u +%Y%m%dT%H%M%SZ)}
BIN=$BENCH/bin
SOCK=$BENCH/berth.sock
BROOT=$BENCH/root
BEXEC=$BENCH/r
DROOT=$BENCH/docker
DEXEC=$BENCH/dx
DSOCK=$BENCH/docker.sock
PD=$BENCH/podman
JSON=$RESULTS/json
LOGS=$RESULTS/logs
RES=$RESULTS/results.tsv
export DOCKER_CLI_HINTS=false

BERTHD_PID="" DOCKERD_PID="" CONTAINERD_PID="" TRACED_BERTHD_PID="" STRACE_PID=""
STARTED_PIDS=()
BERTH_CG_PARENT=""        # memory cgroup path of berthd; containers live in <it>/berth/<id>
BERTH_CG_EXISTED=()       # <mp><parent>/berth dirs that existed before we started
IPFWD_BEFORE="" FWD_POLICY_BEFORE="" IPFWD_BEFORE_DOCKER="" FWD_POLICY_BEFORE_DOCKER=""
# directories outside $BENCH that dockerd/containerd/podman/runc create on first use
SYSTEM_DIRS="/run/containers /run/runc /run/libpod /run/netns /run/docker /run/containerd /var/lib/containers /etc/containers/networks"
SYSTEM_DIRS_BEFORE=""

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

# ---------------------------------------------------------------- results ---
# results.tsv: engine  key  description  value  unit  min  max  n  load1(before>after)  via
rec_val() {   # engine key desc value unit [via]
  printf '%s\t%s\t%s\t%s\t%s\t\t\t\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" "$(load1)" "${6:-}" >>"$RES"
}
rec_fail() {  # engine key desc reason [via]
  printf '%s\t%s\t%s\tFAILED\t%s\t\t\t\t%s\t%s\n' "$1" "$2" "$3" \
    "$(echo "$4" | tr '\t\n' '  ' | cut -c1-200)" "$(load1)" "${5:-}" >>"$RES"
  log "FAILED $1/$2: $4"
}
rec_json() {  # engine key desc json load-before via
  python3 - "$@" "$(load1)" >>"$RES" <<'EOF'
import json, sys
eng, key, desc, f, l0, via, l1 = sys.argv[1:8]
r = json.load(open(f))["results"][0]
ms = lambda x: "%.1f" % (x * 1000)
print("\t".join([eng, key, desc, ms(r["median"]), "ms", ms(r["min"]), ms(r["max"]), str(len(r["times"])), l0 + ">" + l1, via]))
EOF
}

# bench ENGINE KEY DESC VIA [-N] [--prepare CMD] CMD
bench() {
  local eng=$1 key=$2 desc=$3 via=$4; shift 4
  local noshell=() prep=""
  while [ $# -gt 1 ]; do
    case $1 in
      -N) noshell=(-N) ;;
      --prepare) prep=$2; shift ;;
    esac
    shift
  done
  local cmd=$1 lf=$LOGS/$eng.$key.log l0
  l0=$(load1)
  log "bench $eng/$key: $cmd"
  : >"$lf"
  [ -n "$prep" ] && sh -c "$prep" >>"$lf" 2>&1
  # one untimed check run, so that a broken command gets a readable reason instead of a hang
  if ! timeout 60 sh -c "$cmd" >>"$lf" 2>&1; then
    rec_fail "$eng" "$key" "$desc" "$(tail -n 3 "$lf")" "$via"; return 1
  fi
  local hf=(hyperfine --style basic -w "$WARMUP" -r "$RUNS" --export-json "$JSON/$eng.$key.json" "${noshell[@]}")
  [ -n "$prep" ] && hf+=(--prepare "$prep")
  if ! timeout 1800 "${hf[@]}" "$cmd" >>"$lf" 2>&1; then
    rec_fail "$eng" "$key" "$desc" "hyperfine: $(tail -n 2 "$lf")" "$via"; return 1
  fi
  rec_json "$eng" "$key" "$desc" "$JSON/$eng.$key.json" "$l0" "$via"
}

# RUNS requests in one curl process (one connection): per-request time without any client start-up
api_times() {  # engine key desc sock path
  local l0 urls=() i; l0=$(load1)
  for i in $(seq $((RUNS + WARMUP))); do urls+=(-o /dev/null "http://x/v1.41$5"); done
  curl -sS --max-time 300 --unix-socket "$4" -w '%{time_total}\n' "${urls[@]}" 2>"$LOGS/$1.$2.log" |
    tail -n "$RUNS" | python3 -c '
import sys, statistics
v = sorted(float(x) * 1000 for x in sys.stdin if x.strip())
e, k, d, l0, l1 = sys.argv[1:6]
if v:
    print("\t".join([e, k, d, "%.1f" % statistics.median(v), "ms", "%.1f" % v[0], "%.1f" % v[-1], str(len(v)), l0 + ">" + l1, "curl"]))
' "$1" "$2" "$3" "$l0" "$(load1)" >>"$RES"
}

# timed bulk operation (rm -f of many): records ms, or FAILED with the reason (e.g. a timeout)
timed() {  # engine key desc via timeout-seconds cmd...
  local eng=$1 key=$2 desc=$3 via=$4 to=$5 t0 rc; shift 5
  t0=$(now_ms)
  timeout "$to" "$@" >"$LOGS/$eng.$key.log" 2>&1; rc=$?
  if [ $rc = 0 ]; then rec_val "$eng" "$key" "$desc" "$(( $(now_ms) - t0 ))" ms "$via"
  elif [ $rc = 124 ]; then rec_fail "$eng" "$key" "$desc" "timed out after ${to}s" "$via"
  else rec_fail "$eng" "$key" "$desc" "exit $rc: $(tail -n 2 "$LOGS/$eng.$key.log")" "$via"; fi
}
BULK_TIMEOUT=${BULK_TIMEOUT:-900}

# memory of a set of PIDs, KiB, from /proc/<pid>/smaps_rollup (missing PIDs count 0)
mem_kib() {  # field(Rss|Pss) pid...
  local f=$1 p s=0 v; shift
  for p in "$@"; do
    v=$(awk -v f="$f:" '$1==f{print $2}' "/proc/$p/smaps_rollup" 2>/dev/null)
    s=$((s + ${v:-0}))
  done
  echo "$s"
}
mib() { awk -v k="$1" 'BEGIN{printf "%.2f", k/1024}'; }
per() { awk -v k="$1" -v n="$2" 'BEGIN{ if (n > 0) printf "%.2f", k/1024/n; else print "n/a" }'; }
# wait until a docker-compatible socket answers; prints ms waited or returns 1
wait_api() {  # sock pid
  local t0 n=0; t0=$(now_ms)
  until curl -fsS --max-time 2 --unix-socket "$1" http://x/_ping >/dev/null 2>&1; do
    sleep 0.02; n=$((n+1))
    { [ $n -gt 3000 ] || [ ! -d "/proc/$2" ]; } && return 1
  done
  echo $(( $(now_ms) - t0 ))
}
# create N containers through the Engine API (4 in parallel): no CLI start-up cost in the way
api_create_many() {  # sock n prefix
  seq "$2" | xargs -P 4 -I{} curl -sS -o /dev/null -w '%{http_code}\n' --max-time 60 --unix-socket "$1" \
    -X POST -H 'Content-Type: application/json' -d '{"Image":"busybox","Cmd":["true"],"HostConfig":{"NetworkMode":"none"}}' \
    "http://x/v1.41/containers/create?name=$3{}" | sort | uniq -c | tr '\n' ' '
}

# ------------------------------------------------------------------ setup ---
build() {
  if [ "${SKIP_BUILD:-0}" = 1 ]; then
    log "SKIP_BUILD=1: using existing $TARGET_DIR/release binaries"
  else
    log "cargo build --release (berth-daemon, berth-runtime, berth-cli)"
    local cargo=cargo as=()
    command -v cargo >/dev/null || cargo=${SUDO_USER:+$(getent passwd "$SUDO_USER" | cut -d: -f6)}/.cargo/bin/cargo
    # under sudo, build as the invoking user so target/ does not become root-owned
    [ -n "${SUDO_USER:-}" ] && [ "$SUDO_USER" != root ] && as=(sudo -u "$SUDO_USER" --preserve-env=PATH)
    (cd "$REPO" && "${as[@]}" env CARGO_TARGET_DIR="$TARGET_DIR" "$cargo" build --release -p berth-daemon -p berth-runtime -p berth-cli) \
      >"$LOGS/build.log" 2>&1 || { log "release build failed:"; tail -20 "$LOGS/build.log" >&2; exit 1; }
  fi
  mkdir -p "$BIN"
  local b
  # private copies: a concurrent build cannot swap the binaries under a running measurement
  for b in berthd berth-shim berth; do
    cp "$TARGET_DIR/release/$b" "$BIN/$b" || { log "missing $TARGET_DIR/release/$b"; exit 1; }
  done
}

install_pkgs() {
  local want=() p
  [ "$SKIP_DOCKER" = 1 ] || want+=(docker.io)
  [ "$SKIP_PODMAN" = 1 ] || want+=(podman)
  has_section network && want+=(iperf3)
  local missing=()
  for p in "${want[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "${APT:-1}" = 0 ]; then log "APT=0 and missing ${missing[*]}: those rows are skipped"; return 0; fi
  log "apt-get install ${missing[*]}"
  apt-get -o DPkg::Lock::Timeout=600 update >"$LOGS/apt.log" 2>&1
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y "${missing[@]}" >>"$LOGS/apt.log" 2>&1 \
    || log "apt-get failed (see $LOGS/apt.log); missing engines are skipped"
}

make_image_tar() {
  if [ -x "$REPO/scripts/make-busybox-rootfs.sh" ] || [ -f "$REPO/scripts/make-busybox-rootfs.sh" ]; then
    bash "$REPO/scripts/make-busybox-rootfs.sh" "$BENCH/busybox.tar" && return 0
  fi
  # fallback: /usr/bin/busybox + applet links + passwd/group
  local r=$BENCH/rootfs a
  rm -rf "$r"; mkdir -p "$r"/{bin,etc,tmp,proc,sys,dev,root}
  cp /usr/bin/busybox "$r/bin/busybox"
  for a in $("$r/bin/busybox" --list); do [ "$a" = busybox ] || ln -sf busybox "$r/bin/$a"; done
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$r/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$r/etc/group"
  chmod 1777 "$r/tmp"
  tar --numeric-owner -C "$r" -cf "$BENCH/busybox.tar" .
}

facts() {
  {
    echo "date: $(date -u +%FT%TZ)"
    echo "host: $(. /etc/os-release; echo "$PRETTY_NAME"), kernel $(uname -r), $(nproc) CPUs ($(awk -F: '/model name/{print $2; exit}' /proc/cpuinfo | sed 's/^ *//')), $(awk '/MemTotal/{printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
    echo "fs: $BENCH on $(findmnt -n -o FSTYPE -T /tmp); cgroups: v1 hybrid=$( [ -d /sys/fs/cgroup/unified ] && echo yes || echo no )"
    echo "berth: git $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null) + $(git -C "$REPO" status --porcelain 2>/dev/null | wc -l) uncommitted paths; release profile; binaries $(du -b "$BIN/berthd" "$BIN/berth-shim" "$BIN/berth" | awk '{printf "%s %.1f MB  ", $2, $1/1e6}' | sed "s|$BIN/||g")"
    echo "versions: $(dockerd --version 2>/dev/null | sed 's/Docker version/dockerd/'); containerd $(containerd --version 2>/dev/null | awk '{print $3}'); runc $(runc --version 2>/dev/null | awk 'NR==1{print $3}'); podman $(podman --version 2>/dev/null | awk '{print $3}'); conmon $(conmon --version 2>/dev/null | awk 'NR==1{print $3}'); docker CLI $("$DOCKER_CLI" version --format '{{.Client.Version}}' 2>/dev/null) ($DOCKER_CLI); hyperfine $(hyperfine --version | awk '{print $2}'); strace $(strace --version | awk 'NR==1{print $4}')"
    echo "knobs: SECTIONS=\"$SECTIONS\" RUNS=$RUNS WARMUP=$WARMUP NCONT=$NCONT NSTART=$NSTART NPS=$NPS BREAKDOWN=$BREAKDOWN BREAKDOWN_RUNS=$BREAKDOWN_RUNS NSTATS=$NSTATS HEALTH_SECS=$HEALTH_SECS IPERF_SECS=$IPERF_SECS IPERF_ROUNDS=$IPERF_ROUNDS NET_RUNS=$NET_RUNS"
    has_section network && echo "iperf3: $(iperf3 --version 2>/dev/null | head -1)"
    echo "loadavg at start: $(cut -d' ' -f1-3 /proc/loadavg)"
  } >"$RESULTS/facts.txt"
}

# ------------------------------------------------------------------ berth ---
B() { timeout 120 "$BIN/berth" -H "unix://$SOCK" --no-autostart "$@"; }
DB() { DOCKER_HOST=unix://$SOCK timeout 120 "$DOCKER_CLI" "$@"; }   # docker CLI -> berthd
BERTH_RUN_VIA="" BERTH_PS_VIA="" BERTH_RMF_VIA=""

start_berthd() {  # socket data-root exec-root logfile [wrapper...]  -> sets REPLY to the PID
  local sock=$1 root=$2 exec=$3 logf=$4; shift 4
  "$@" "$BIN/berthd" -H "unix://$sock" --data-root "$root" --exec-root "$exec" \
    --bridge-name "$BERTH_BRIDGE" --default-address-pool "$BERTH_POOL" >"$logf" 2>&1 &
  REPLY=$!
  STARTED_PIDS+=("$REPLY")
}

berth_setup() {
  log "== berth: start berthd (release) on $SOCK"
  local ms
  start_berthd "$SOCK" "$BROOT" "$BEXEC" "$LOGS/berthd.log"
  BERTHD_PID=$REPLY
  ms=$(wait_api "$SOCK" "$BERTHD_PID") || { log "berthd did not come up:"; tail -5 "$LOGS/berthd.log" >&2; exit 1; }
  rec_val berth daemon_ready "daemon start until the API answers" "$ms" ms
  BERTH_CG_PARENT=$(awk -F: '$2=="memory"{print $3}' "/proc/$BERTHD_PID/cgroup")
  local d; for d in /sys/fs/cgroup/*"$BERTH_CG_PARENT"/berth; do [ -d "$d" ] && BERTH_CG_EXISTED+=("$d"); done
  sleep 1
  rec_val berth rss_idle0 "daemon RSS right after start" "$(mib "$(mem_kib Rss "$BERTHD_PID")")" MiB
  rec_val berth pss_idle0 "daemon PSS right after start" "$(mib "$(mem_kib Pss "$BERTHD_PID")")" MiB
  # image: `berth import` if it works, else the docker CLI
  if B import "$BENCH/busybox.tar" busybox:latest >"$LOGS/berth.import.log" 2>&1; then
    rec_val berth import_via "busybox image imported with" "berth import" "" berth
  elif DB import "$BENCH/busybox.tar" busybox:latest >>"$LOGS/berth.import.log" 2>&1; then
    rec_val berth import_via "busybox image imported with" "docker import" "" docker-cli
  else
    log "cannot import the busybox image into berthd:"; tail -5 "$LOGS/berth.import.log" >&2; exit 1
  fi
  # which CLI can do what (the berth CLI is preferred; the docker CLI is the fallback)
  if B run --rm busybox true >"$LOGS/berth.probe.log" 2>&1; then BERTH_RUN_VIA=berth; else BERTH_RUN_VIA=docker-cli; fi
  if B ps -a >>"$LOGS/berth.probe.log" 2>&1; then BERTH_PS_VIA=berth; else BERTH_PS_VIA=docker-cli; fi
  local id; id=$(B create busybox true 2>>"$LOGS/berth.probe.log")
  if [ -n "$id" ] && B rm -f "$id" >>"$LOGS/berth.probe.log" 2>&1; then BERTH_RMF_VIA=berth; else BERTH_RMF_VIA=docker-cli; DB rm -f "$id" >/dev/null 2>&1; fi
  log "berth CLI used for: run=$BERTH_RUN_VIA ps=$BERTH_PS_VIA rm=$BERTH_RMF_VIA"
}
# (re)starts the benchmark berthd for a later section after the core rows stopped it (same data
# root: the image is still there)
berth_up() {
  [ -n "$BERTHD_PID" ] && [ -d "/proc/$BERTHD_PID" ] && return 0
  start_berthd "$SOCK" "$BROOT" "$BEXEC" "$LOGS/berthd.restarted.log"
  BERTHD_PID=$REPLY
  wait_api "$SOCK" "$BERTHD_PID" >/dev/null || { log "berthd did not come up again:"; tail -5 "$LOGS/berthd.restarted.log" >&2; exit 1; }
}
bcli() {  # the CLI chosen for an operation: via -> command prefix (for hyperfine strings)
  if [ "$1" = berth ]; then echo "$BIN/berth -H unix://$SOCK --no-autostart"; else echo "env DOCKER_HOST=unix://$SOCK $DOCKER_CLI"; fi
}
bdo() {  # via args...: run through the chosen CLI
  local via=$1; shift
  if [ "$via" = berth ]; then B "$@"; else DB "$@"; fi
}

berth_latency() {
  log "== berth: run latency"
  local c; c=$(bcli "$BERTH_RUN_VIA")
  bench berth run_rm "run --rm busybox true" "$BERTH_RUN_VIA" -N "$c run --rm busybox true"
  bench berth-dockercli run_rm "run --rm busybox true" docker-cli -N "env DOCKER_HOST=unix://$SOCK $DOCKER_CLI run --rm busybox true"
  bench berth run_rm_runc "run --rm --runtime runc busybox true" "$BERTH_RUN_VIA" -N "$c run --rm --runtime runc busybox true"
  bench berth-dockercli run_rm_runc "run --rm --runtime runc busybox true" docker-cli -N "env DOCKER_HOST=unix://$SOCK $DOCKER_CLI run --rm --runtime runc busybox true"
  bench berth run_rm_nonet "run --rm --network none busybox true" "$BERTH_RUN_VIA" -N "$c run --rm --network none busybox true"
  bench berth create_rm "create + rm (never started)" "$BERTH_RUN_VIA" "id=\$($c create busybox true) && $c rm \$id >/dev/null"
  bench berth cli_version "CLI round trip: version (client start + 1 API call)" "$BERTH_RUN_VIA" -N "$c version"
  bench berth-dockercli cli_version "CLI round trip: version (client start + 1 API call)" docker-cli -N "env DOCKER_HOST=unix://$SOCK $DOCKER_CLI version"
  rec_val berth rss_idle "daemon RSS idle, 0 containers, after the latency rows" "$(mib "$(mem_kib Rss "$BERTHD_PID")")" MiB
  rec_val berth pss_idle "daemon PSS idle, 0 containers, after the latency rows" "$(mib "$(mem_kib Pss "$BERTHD_PID")")" MiB
}

# the OCI runtime floor: bare `runc run` of the same rootfs, no engine around it
runc_floor() {
  command -v runc >/dev/null || return 0
  local b=$BENCH/bundle
  rm -rf "$b"; mkdir -p "$b/rootfs"
  tar -C "$b/rootfs" -xf "$BENCH/busybox.tar" || return 0
  (cd "$b" && runc spec) || return 0
  python3 - "$b/config.json" "$BERTH_CG_PARENT/berth-bench-runc" <<'PY'
import json, sys
f, cg = sys.argv[1:3]
c = json.load(open(f))
c["process"]["terminal"] = False
c["process"]["args"] = ["/bin/true"]
c["process"]["rlimits"] = [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}]
c["linux"]["cgroupsPath"] = cg
json.dump(c, open(f, "w"), indent=1)
PY
  bench ref runc_floor "bare runc run of the same rootfs (/bin/true, new namespaces, no engine)" runc -N \
    "runc --root $BENCH/runc-state run -b $b berth-bench-runc"
}

berth_shims() { pids_matching "^$BIN/berth-shim run .*$BEXEC/"; }

berth_density() {
  log "== berth: $NCONT running containers"
  local via=$BERTH_RUN_VIA i t0 ms base pbase
  base=$(mem_kib Rss "$BERTHD_PID"); pbase=$(mem_kib Pss "$BERTHD_PID")
  t0=$(now_ms)
  for i in $(seq "$NCONT"); do
    bdo "$via" run -d --name "bb-sleep-$i" busybox sleep 100000 >/dev/null \
      || { rec_fail berth "start$NCONT" "start $NCONT" "run -d #$i failed" "$via"; break; }
  done
  ms=$(( $(now_ms) - t0 ))
  rec_val berth "start_n" "$NCONT x run -d busybox sleep (sequential), total" "$ms" ms "$via"
  sleep 3
  local sh n kd pd ks ps
  sh=$(berth_shims | xargs); n=$(echo $sh | wc -w)
  kd=$(mem_kib Rss "$BERTHD_PID"); pd=$(mem_kib Pss "$BERTHD_PID")
  ks=$(mem_kib Rss $sh); ps=$(mem_kib Pss $sh)
  rec_val berth shims_n "per-container processes found (berth-shim)" "$n" ""
  rec_val berth rss_daemon_n "daemon RSS with $NCONT running" "$(mib "$kd")" MiB
  rec_val berth rss_shim_each "RSS per shim (berth-shim), mean of $n" "$(per "$ks" "$n")" MiB
  rec_val berth pss_shim_each "PSS per shim (berth-shim), mean of $n" "$(per "$ps" "$n")" MiB
  rec_val berth rss_percont "RSS per container: (daemon growth + shims) / $NCONT" "$(per $((kd - base + ks)) "$NCONT")" MiB
  rec_val berth pss_percont "PSS per container: (daemon growth + shims) / $NCONT" "$(per $((pd - pbase + ps)) "$NCONT")" MiB
  rec_val berth rss_total_n "RSS total (daemon + shims) with $NCONT running" "$(mib $((kd + ks)))" MiB
  rec_val berth pss_total_n "PSS total (daemon + shims) with $NCONT running" "$(mib $((pd + ps)))" MiB
  local c; c=$(bcli "$BERTH_PS_VIA")
  bench berth ps_running "ps with $NCONT running" "$BERTH_PS_VIA" -N "$c ps"
  timed berth rmf_n "rm -f of $NCONT running (one call)" "$BERTH_RMF_VIA" "$BULK_TIMEOUT" \
    $(bcli "$BERTH_RMF_VIA") rm -f $(bdo "$BERTH_PS_VIA" ps -aq)
}

berth_start_many() {
  log "== berth: $NSTART x run -d"
  local via=$BERTH_RUN_VIA i t0 ms
  t0=$(now_ms)
  for i in $(seq "$NSTART"); do
    bdo "$via" run -d busybox sleep 100000 >/dev/null \
      || { rec_fail berth start_many "start $NSTART" "run -d #$i failed" "$via"; break; }
  done
  ms=$(( $(now_ms) - t0 ))
  rec_val berth start_many "$NSTART x run -d busybox sleep (sequential), total" "$ms" ms "$via"
  rec_val berth rss_daemon_many "daemon RSS with $NSTART running" "$(mib "$(mem_kib Rss "$BERTHD_PID")")" MiB
  timed berth rmf_many "rm -f of $NSTART running (one call)" "$BERTH_RMF_VIA" "$BULK_TIMEOUT" \
    $(bcli "$BERTH_RMF_VIA") rm -f $(bdo "$BERTH_PS_VIA" ps -aq)
}

berth_ps_many() {
  [ "$NPS" -gt 0 ] || return 0
  log "== berth: ps -a with $NPS created containers"
  local t0 out
  t0=$(now_ms)
  out=$(api_create_many "$SOCK" "$NPS" bbc-)
  rec_val berth create_api "$NPS x POST /containers/create (API, 4 parallel), total" "$(( $(now_ms) - t0 ))" ms api
  log "   create status codes: $out"
  rec_val berth created "containers present for ps -a" "$(bdo "$BERTH_PS_VIA" ps -aq | wc -l)" ""
  local c; c=$(bcli "$BERTH_PS_VIA")
  bench berth ps_a_many "ps -a with $NPS created containers" "$BERTH_PS_VIA" -N "$c ps -a"
  bench berth-dockercli ps_a_many "ps -a with $NPS created containers" docker-cli -N "env DOCKER_HOST=unix://$SOCK $DOCKER_CLI ps -a"
  api_times berth api_ps_a_many "GET /containers/json?all=1 with $NPS, server time (curl, no CLI start-up)" "$SOCK" "/containers/json?all=1"
  rec_val berth rss_daemon_ps "daemon RSS with $NPS created containers" "$(mib "$(mem_kib Rss "$BERTHD_PID")")" MiB
  timed berth rm_many "rm of $NPS created containers (one CLI call)" "$BERTH_RMF_VIA" "$BULK_TIMEOUT" \
    $(bcli "$BERTH_RMF_VIA") rm $(bdo "$BERTH_PS_VIA" ps -aq)
  rec_val berth rss_after_rm "daemon RSS right after removing the $NPS" "$(mib "$(mem_kib Rss "$BERTHD_PID")")" MiB
  sleep 10
  rec_val berth rss_after_rm10 "daemon RSS 10 s later" "$(mib "$(mem_kib Rss "$BERTHD_PID")")" MiB
}

# -------------------------------------------------- berth: phase breakdown ---
# A second berthd runs under `strace -f --seccomp-bpf` (only the traced syscalls stop, so the
# overhead is small); every traced `run --rm` is also run under strace. Landmarks (HTTP
# requests/replies, execve of the shim and of `true`, the shim's "ok", Exit, process exits,
# mounts, fdatasync) split each run into phases; medians over BREAKDOWN_RUNS runs.
berth_breakdown() {
  [ "$BREAKDOWN" = 1 ] || return 0
  command -v strace >/dev/null || { log "no strace: breakdown skipped"; return 0; }
  log "== berth: phase breakdown of run --rm under strace ($BREAKDOWN_RUNS runs per CLI)"
  local tdir=$BENCH/t tsock=$BENCH/t.sock tr=$RESULTS/trace
  mkdir -p "$tr" "$tdir"
  # few, rare syscalls on the daemon side (no read/recvfrom: libcontainer reads mountinfo dozens of
  # times per start, and every traced call costs a ptrace stop); the client side needs its reads
  local sc="execve,clone,clone3,vfork,unshare,setns,mount,umount2,pivot_root,seccomp,rmdir,unlinkat,fsync,fdatasync,exit_group,sendto,writev,write,wait4"
  local scc="execve,connect,sendto,recvfrom,write,writev,read,exit_group"
  strace -f --seccomp-bpf -tt -T -s 200 -e trace="$sc" -o "$tr/daemon.strace" \
    "$BIN/berthd" -H "unix://$tsock" --data-root "$tdir/root" --exec-root "$tdir/r" \
    --bridge-name "$TRACED_BRIDGE" --default-address-pool "$TRACED_POOL" >"$LOGS/berthd.traced.log" 2>&1 &
  STRACE_PID=$!
  STARTED_PIDS+=("$STRACE_PID")
  wait_api "$tsock" "$STRACE_PID" >/dev/null || { log "traced berthd did not come up"; return 1; }
  TRACED_BERTHD_PID=$(pgrep -P "$STRACE_PID" -f "$BIN/berthd" | head -1)
  local tb=("$BIN/berth" -H "unix://$tsock" --no-autostart)
  timeout 60 "${tb[@]}" import "$BENCH/busybox.tar" busybox:latest >/dev/null 2>&1 \
    || DOCKER_HOST=unix://$tsock timeout 60 "$DOCKER_CLI" import "$BENCH/busybox.tar" busybox:latest >/dev/null
  local cli name i
  for cli in berth docker; do
    if [ $cli = berth ]; then name=berth-cli; set -- "${tb[@]}"; else name=docker-cli; set -- env "DOCKER_HOST=unix://$tsock" "$DOCKER_CLI"; fi
    for i in 1 2 3; do timeout 60 "$@" run --rm busybox true >/dev/null 2>&1; done
    for i in $(seq "$BREAKDOWN_RUNS"); do
      timeout 60 strace -f --seccomp-bpf -tt -T -s 200 -e trace="$scc" -o "$tr/$name.$i.strace" "$@" run --rm busybox true >/dev/null 2>&1
      sleep 0.3
    done
  done
  sleep 0.5
  stop_pid "$TRACED_BERTHD_PID" "traced berthd"
  wait_gone "$STRACE_PID" 50
  python3 "$RESULTS/breakdown.py" "$tr" >"$RESULTS/breakdown.txt" 2>&1 || log "breakdown analysis failed, see $RESULTS/breakdown.txt"
  cat "$RESULTS/breakdown.txt" >&2
}

write_breakdown_py() {
  cat >"$RESULTS/breakdown.py" <<'EOF'
"""Phase breakdown of `run --rm busybox true` from strace landmarks (see bench/run.sh)."""
import glob, os, re, statistics, sys

LINE = re.compile(r'^(\d+)\s+(\d\d):(\d\d):(\d\d\.\d+) (.*)$')
DUR = re.compile(r'<(\d+\.\d+)>$')

def parse(path):
    """-> list of (pid, start, end, text) with unfinished/resumed pairs merged."""
    out, pending = [], {}
    for line in open(path, errors='replace'):
        m = LINE.match(line.rstrip('\n'))
        if not m:
            continue
        pid = int(m.group(1))
        t = int(m.group(2)) * 3600 + int(m.group(3)) * 60 + float(m.group(4))
        text = m.group(5)
        if text.endswith('<unfinished ...>'):
            pending[pid] = (t, text)
            continue
        if text.startswith('<...'):
            st, first = pending.pop(pid, (t, text))
            d = DUR.search(text)
            out.append((pid, st, st + (float(d.group(1)) if d else 0.0), first + ' ' + text))
            continue
        d = DUR.search(text)
        out.append((pid, t, t + (float(d.group(1)) if d else 0.0), text))
    out.sort(key=lambda e: e[1])
    return out

def first(evs, pred, after=0.0):
    for e in evs:
        if e[1] >= after and pred(e):
            return e
    return None

def analyse(client_path, daemon):
    c = parse(client_path)
    if not c:
        return None
    t_exec, t_exit = c[0][1], c[-1][2]
    is_write = lambda e: re.match(r'(write|writev|sendto)\(', e[3]) is not None
    is_read = lambda e: re.match(r'(read|recvfrom)\(', e[3]) is not None
    cs = first(c, lambda e: is_write(e) and '/containers/create' in e[3])
    cr = cs and first(c, lambda e: is_read(e) and 'HTTP/1.1 201' in e[3], cs[1])
    ss = first(c, lambda e: is_write(e) and re.search(r'/containers/[0-9a-f]+/start', e[3]) is not None)
    sr = ss and first(c, lambda e: is_read(e) and 'HTTP/1.1 204' in e[3], ss[1])
    wd = ss and first(c, lambda e: is_read(e) and 'StatusCode' in e[3], ss[1])
    d = [e for e in daemon if t_exec <= e[1] <= t_exit + 0.05]
    shim_exec = first(d, lambda e: e[3].startswith('execve(') and 'berth-shim' in e[3].split(',')[0])
    shim_fork = shim_exec and first(d, lambda e: e[0] == shim_exec[0] and re.match(r'(clone|clone3|fork)\(', e[3]) is not None, shim_exec[1])
    shim_pid = int(re.search(r'= (\d+)', shim_fork[3].split('resumed>')[-1]).group(1)) if shim_fork else None
    shim_ok = first(d, lambda e: e[3].startswith('write(') and re.search(r'"ok \d+', e[3]) is not None)
    interm = shim_pid and first(d, lambda e: e[0] == shim_pid and e[3].startswith('clone3('))
    interm_pid = int(re.search(r'= (\d+)', interm[3].split('resumed>')[-1]).group(1)) if interm else None
    init_clone = interm_pid and first(d, lambda e: e[0] == interm_pid and e[3].startswith('clone3(') and 'CLONE_PARENT' in e[3])
    init_pid = int(re.search(r'= (\d+)', init_clone[3].split('resumed>')[-1]).group(1)) if init_clone else None
    attach = [e for e in d if e[0] == interm_pid and re.match(r'write\(\d+, "\d+", \d+\)', e[3])]
    unshares = [e for e in d if e[0] in (interm_pid, init_pid) and re.match(r'(unshare|setns)\(', e[3])]
    init_ev = [e for e in d if e[0] == init_pid and (not shim_ok or e[1] <= shim_ok[1])]
    pivot = next((e for e in init_ev if e[3].startswith('pivot_root(')), None)
    # the filter is loaded by the shim's executor right before the command's execve (a
    # program the daemon compiled once); libcontainer's own path (libseccomp probes and a
    # compile in the init, before "ok") only runs for profiles with a notify action
    sc_probe = next((e for e in init_ev if e[3].startswith('seccomp(')), None)
    seccomp = next((e for e in d if e[0] == init_pid and e[3].startswith('seccomp(SECCOMP_SET_MODE_FILTER') and 'filter=' in e[3]), None)
    ctr_exec = None
    for e in d:
        if e[3].startswith('execve(') and 'berth-shim' not in e[3].split(',')[0] and '= 0' in e[3]:
            ctr_exec = e
    ctr_exit = ctr_exec and first(d, lambda e: e[0] == ctr_exec[0] and e[3].startswith('+++ exited'), ctr_exec[1])
    exit_sent = first(d, lambda e: e[3].startswith('sendto(') and '\\"type\\":\\"Exit\\"' in e[3])
    rmdir = exit_sent and first(d, lambda e: e[0] == shim_pid and e[3].startswith('rmdir('), exit_sent[1])
    shim_gone = shim_pid and first(d, lambda e: e[0] == shim_pid and e[3].startswith('+++ exited'))
    mount = first(d, lambda e: e[3].startswith('mount("overlay"'))
    umount = first(d, lambda e: e[3].startswith('umount2(') and '/rootfs' in e[3] and e[0] != init_pid)
    syncs = [e for e in d if re.match(r'f(data)?sync\(', e[3])]
    unlinks = [e for e in d if e[3].startswith('unlinkat(')]
    vfork = shim_exec and next((e for e in d if e[3].startswith('clone3(') and 'CLONE_VFORK' in e[3]
                                and re.search(r'= %d ' % shim_exec[0], e[3])), None)
    T = lambda e, end=False: (e[2] if end else e[1]) if e else None
    marks = [('CLI start -> create request sent', t_exec, T(cs)),
             ('create: request -> 201 reply', T(cs), T(cr)),
             ('attach + wait requests -> start request sent', T(cr), T(ss)),
             ('start: overlay mount, hosts files, config.json, spawn -> shim exec', T(ss), T(shim_exec)),
             ('shim: exec, args, setsid -> detach fork', T(shim_exec), T(shim_fork)),
             ('shim: stdio, socket, libcontainer builder -> intermediate process', T(shim_fork), T(interm)),
             ('intermediate: cgroups (mkdir, attach, devices), namespaces -> init process', T(interm), T(init_clone)),
             ('init: rootfs mounts (/proc, /dev, /sys, ...) -> pivot_root', T(init_clone), T(pivot)),
             ('init: pivot_root, masked/readonly paths, hostname, rlimits, caps -> shim reports "ok"', T(pivot), T(shim_ok)),
             ('"ok" -> Hello/Attach/Start to the shim, seccomp filter load -> exec of `true`', T(shim_ok), T(ctr_exec)),
             ('`true` runs', T(ctr_exec), T(ctr_exit)),
             ('exit noticed by the shim, exit.json written -> Exit sent to berthd', T(ctr_exit), T(exit_sent)),
             ('Delete: libcontainer state removed -> first cgroup rmdir', T(exit_sent), T(rmdir)),
             ('cgroup rmdir, socket cleanup -> shim exits', T(rmdir), T(shim_gone)),
             ('rootfs umount2 syscall (MNT_DETACH; the layer is volatile, no sync)', T(umount), T(umount, True)),
             ('network detach, state commits -> wait reply (files deleted after it)', T(umount, True), T(wd)),
             ('wait reply -> CLI exits', T(wd), t_exit)]
    res = {}
    for name, a, b in marks:
        res[name] = (b - a) * 1000 if (a is not None and b is not None) else None
    res['TOTAL (traced)'] = (t_exit - t_exec) * 1000
    res['  start request -> 204 reply'] = ((sr[1] - ss[1]) * 1000) if (sr and ss) else None
    res['  of which: first cgroup.procs write (cgroup v1 attach)'] = max([(e[2] - e[1]) * 1000 for e in attach] or [0]) if attach else None
    res['  of which: unshare/setns (new namespaces) total'] = sum(e[2] - e[1] for e in unshares) * 1000 if unshares else None
    res['  of which: seccomp filter load (seccomp syscall)'] = ((seccomp[2] - seccomp[1]) * 1000) if seccomp else None
    res['  of which: libseccomp in the init (only profiles with a notify action)'] = ((seccomp[1] - sc_probe[1]) * 1000) if (seccomp and sc_probe) else None
    res['  of which: overlay mount syscall'] = ((mount[2] - mount[1]) * 1000) if mount else None
    res['  of which: spawn of the shim (clone3 CLONE_VFORK -> execve)'] = ((shim_exec[1] - vfork[1]) * 1000) if (vfork and shim_exec) else None
    res['  unlinkat (rm -rf of dirs): total time'] = sum(e[2] - e[1] for e in unlinks) * 1000
    res['  fsync/fdatasync: count'] = len(syncs)
    res['  fsync/fdatasync: total time'] = sum(e[2] - e[1] for e in syncs) * 1000
    res['  fsync/fdatasync: longest'] = max([(e[2] - e[1]) * 1000 for e in syncs] or [0])
    return res

def main():
    tr = sys.argv[1]
    daemon = parse(os.path.join(tr, 'daemon.strace'))
    for cli in ('berth-cli', 'docker-cli'):
        files = sorted(glob.glob(os.path.join(tr, cli + '.*.strace')), key=lambda p: int(p.split('.')[-2]))
        runs = [r for r in (analyse(f, daemon) for f in files) if r]
        if not runs:
            continue
        print(f'### {cli}: run --rm busybox true, {len(runs)} traced runs, ms: median [min-max]')
        keys = list(runs[0].keys())
        for k in keys:
            vals = [r[k] for r in runs if r.get(k) is not None]
            if not vals:
                print(f'| {k} | n/a |'); continue
            fmt = '%.0f' if 'count' in k else '%.1f'
            print(f'| {k} | {fmt % statistics.median(vals)} [{fmt % min(vals)}-{fmt % max(vals)}] |')
        print()

main()
EOF
}

# ----------------------------------------------------------------- docker ---
D() { DOCKER_HOST=unix://$DSOCK timeout 120 "$DOCKER_CLI" "$@"; }
DOCKER_CG_EXISTED=()

DOCKER_OK=0 PODMAN_OK=0
# dockerd's network flags: the core rows run without bridge and iptables; the network section
# restarts it with iptables on (see bench/network.sh)
DOCKERD_NET_FLAGS=(--iptables=false --ip-forward=false --bridge=none)
dockerd_start() {  # starts the private dockerd; REPLY = ms until the API answers, or returns 1
  REPLY=""
  dockerd --data-root "$DROOT" --exec-root "$DEXEC" --pidfile "$BENCH/dockerd.pid" -H "unix://$DSOCK" \
    "${DOCKERD_NET_FLAGS[@]}" >>"$LOGS/dockerd.log" 2>&1 &
  DOCKERD_PID=$!
  STARTED_PIDS+=("$DOCKERD_PID")
  REPLY=$(wait_api "$DSOCK" "$DOCKERD_PID") || return 1
  CONTAINERD_PID=$(pgrep -P "$DOCKERD_PID" -x containerd | head -1)
  STARTED_PIDS+=("$CONTAINERD_PID")
}

docker_setup() {
  [ "$SKIP_DOCKER" = 1 ] && return 0
  command -v dockerd >/dev/null || { rec_fail docker setup "dockerd" "dockerd not installed"; return 0; }
  log "== docker: start a private dockerd"
  local d; for d in /sys/fs/cgroup/*/docker; do [ -d "$d" ] && DOCKER_CG_EXISTED+=("$d"); done
  IPFWD_BEFORE_DOCKER=$(sysctl -n net.ipv4.ip_forward)
  FWD_POLICY_BEFORE_DOCKER=$(iptables -S FORWARD 2>/dev/null | awk '/^-P FORWARD/{print $3}')
  dockerd_start || { rec_fail docker setup "dockerd" "did not come up: $(tail -2 "$LOGS/dockerd.log")"; return 0; }
  rec_val docker daemon_ready "daemon start until the API answers" "$REPLY" ms
  sleep 1
  local dp="$DOCKERD_PID $CONTAINERD_PID"
  rec_val docker rss_idle0 "daemon RSS right after start (dockerd + containerd)" "$(mib "$(mem_kib Rss $dp)")" MiB
  rec_val docker pss_idle0 "daemon PSS right after start (dockerd + containerd)" "$(mib "$(mem_kib Pss $dp)")" MiB
  D import "$BENCH/busybox.tar" busybox:latest >/dev/null || { rec_fail docker setup "import" "docker import failed"; return 0; }
  DOCKER_OK=1
}

# (re)starts the private dockerd for a later section after the core rows stopped it
docker_up() {
  [ "$DOCKER_OK" = 1 ] || return 0
  [ -n "$DOCKERD_PID" ] && [ -d "/proc/$DOCKERD_PID" ] && return 0
  dockerd_start || { log "dockerd did not come up again: $(tail -2 "$LOGS/dockerd.log")"; DOCKER_OK=0; }
}

docker_latency() {
  [ "$DOCKER_OK" = 1 ] || return 0
  log "== docker: run latency"
  local c="env DOCKER_HOST=unix://$DSOCK $DOCKER_CLI" dp="$DOCKERD_PID $CONTAINERD_PID"
  bench docker run_rm "run --rm busybox true" docker-cli -N "$c run --rm --network none busybox true"
  bench docker run_rm_runc "run --rm --runtime runc busybox true" docker-cli -N "$c run --rm --network none --runtime runc busybox true"
  bench docker create_rm "create + rm (never started)" docker-cli "id=\$($c create --network none busybox true) && $c rm \$id >/dev/null"
  bench docker cli_version "CLI round trip: version (client start + 1 API call)" docker-cli -N "$c version"
  rec_val docker rss_idle "daemon RSS idle, 0 containers, after the latency rows" "$(mib "$(mem_kib Rss $dp)")" MiB
  rec_val docker pss_idle "daemon PSS idle, 0 containers, after the latency rows" "$(mib "$(mem_kib Pss $dp)")" MiB
}

docker_rest() {
  [ "$DOCKER_OK" = 1 ] || return 0
  local c="env DOCKER_HOST=unix://$DSOCK $DOCKER_CLI" dp="$DOCKERD_PID $CONTAINERD_PID" t0
  log "== docker: $NCONT running containers"
  local base pbase i
  base=$(mem_kib Rss $dp); pbase=$(mem_kib Pss $dp)
  t0=$(now_ms)
  for i in $(seq "$NCONT"); do
    D run -d --network none --name "bb-sleep-$i" busybox sleep 100000 >/dev/null || { rec_fail docker start_n "start" "#$i failed"; break; }
  done
  rec_val docker start_n "$NCONT x run -d busybox sleep (sequential), total" "$(( $(now_ms) - t0 ))" ms docker-cli
  sleep 3
  local sh n kd pd ks ps
  sh=$(pids_matching "containerd-shim.*$DEXEC/" | xargs); n=$(echo $sh | wc -w)
  kd=$(mem_kib Rss $dp); pd=$(mem_kib Pss $dp); ks=$(mem_kib Rss $sh); ps=$(mem_kib Pss $sh)
  rec_val docker shims_n "per-container processes found (containerd-shim-runc-v2)" "$n" ""
  rec_val docker rss_daemon_n "daemon RSS with $NCONT running" "$(mib "$kd")" MiB
  rec_val docker rss_shim_each "RSS per shim (containerd-shim-runc-v2), mean of $n" "$(per "$ks" "$n")" MiB
  rec_val docker pss_shim_each "PSS per shim (containerd-shim-runc-v2), mean of $n" "$(per "$ps" "$n")" MiB
  rec_val docker rss_percont "RSS per container: (daemon growth + shims) / $NCONT" "$(per $((kd - base + ks)) "$NCONT")" MiB
  rec_val docker pss_percont "PSS per container: (daemon growth + shims) / $NCONT" "$(per $((pd - pbase + ps)) "$NCONT")" MiB
  rec_val docker rss_total_n "RSS total (daemon + shims) with $NCONT running" "$(mib $((kd + ks)))" MiB
  rec_val docker pss_total_n "PSS total (daemon + shims) with $NCONT running" "$(mib $((pd + ps)))" MiB
  bench docker ps_running "ps with $NCONT running" docker-cli -N "$c ps"
  timed docker rmf_n "rm -f of $NCONT running (one call)" docker-cli "$BULK_TIMEOUT" \
    env DOCKER_HOST="unix://$DSOCK" "$DOCKER_CLI" rm -f $(D ps -aq)

  log "== docker: $NSTART x run -d"
  t0=$(now_ms)
  for i in $(seq "$NSTART"); do
    D run -d --network none busybox sleep 100000 >/dev/null || { rec_fail docker start_many "start" "#$i failed"; break; }
  done
  rec_val docker start_many "$NSTART x run -d busybox sleep (sequential), total" "$(( $(now_ms) - t0 ))" ms docker-cli
  rec_val docker rss_daemon_many "daemon RSS with $NSTART running" "$(mib "$(mem_kib Rss $dp)")" MiB
  timed docker rmf_many "rm -f of $NSTART running (one call)" docker-cli "$BULK_TIMEOUT" \
    env DOCKER_HOST="unix://$DSOCK" "$DOCKER_CLI" rm -f $(D ps -aq)

  if [ "$NPS" -gt 0 ]; then
    log "== docker: ps -a with $NPS created containers"
    t0=$(now_ms)
    local out; out=$(api_create_many "$DSOCK" "$NPS" bbc-)
    rec_val docker create_api "$NPS x POST /containers/create (API, 4 parallel), total" "$(( $(now_ms) - t0 ))" ms api
    log "   create status codes: $out"
    rec_val docker created "containers present for ps -a" "$(D ps -aq | wc -l)" ""
    bench docker ps_a_many "ps -a with $NPS created containers" docker-cli -N "$c ps -a"
    api_times docker api_ps_a_many "GET /containers/json?all=1 with $NPS, server time (curl, no CLI start-up)" "$DSOCK" "/containers/json?all=1"
    rec_val docker rss_daemon_ps "daemon RSS with $NPS created containers" "$(mib "$(mem_kib Rss $dp)")" MiB
    timed docker rm_many "rm of $NPS created containers (container prune)" docker-cli "$BULK_TIMEOUT" \
      env DOCKER_HOST="unix://$DSOCK" "$DOCKER_CLI" container prune -f
  fi
  docker_stop
}

docker_stop() {
  [ -n "$DOCKERD_PID" ] || return 0
  if [ -d "/proc/$DOCKERD_PID" ]; then
    local ids; ids=$(D ps -aq 2>/dev/null)
    [ -n "$ids" ] && DOCKER_HOST="unix://$DSOCK" timeout "$BULK_TIMEOUT" "$DOCKER_CLI" rm -f $ids >/dev/null 2>&1
  fi
  stop_pid "$DOCKERD_PID" dockerd
  stop_pid "$CONTAINERD_PID" containerd
  local s; for s in $(pids_matching "containerd-shim.*$DEXEC/"); do stop_pid "$s" containerd-shim; done
  local h keep d p
  for h in /sys/fs/cgroup/*/docker; do
    [ -d "$h" ] || continue
    keep=0; for d in "${DOCKER_CG_EXISTED[@]}"; do [ "$d" = "$h" ] && keep=1; done
    [ $keep = 1 ] && continue
    # the docker/ parent is ours: whatever still runs below it is a container of our dockerd
    for p in $(cat "$h"/*/cgroup.procs 2>/dev/null); do kill -KILL "$p" 2>/dev/null; done
    sleep 0.2
    find "$h" -depth -type d -exec rmdir {} \; 2>/dev/null
  done
  if [ -n "$IPFWD_BEFORE_DOCKER" ] && [ "$(sysctl -n net.ipv4.ip_forward)" != "$IPFWD_BEFORE_DOCKER" ]; then
    sysctl -qw net.ipv4.ip_forward="$IPFWD_BEFORE_DOCKER"; log "dockerd changed net.ipv4.ip_forward: restored $IPFWD_BEFORE_DOCKER"
  fi
  local pol; pol=$(iptables -S FORWARD 2>/dev/null | awk '/^-P FORWARD/{print $3}')
  if [ -n "$FWD_POLICY_BEFORE_DOCKER" ] && [ "$pol" != "$FWD_POLICY_BEFORE_DOCKER" ]; then
    iptables -P FORWARD "$FWD_POLICY_BEFORE_DOCKER"; log "dockerd changed the FORWARD policy: restored $FWD_POLICY_BEFORE_DOCKER"
  fi
  DOCKERD_PID=""
}

# ----------------------------------------------------------------- podman ---
P() { timeout 120 podman --root "$PD/root" --runroot "$PD/run" --runtime runc --cgroup-manager cgroupfs "$@"; }
PODMAN_CG_EXISTED=()
PODMAN_SHM_BEFORE=""

podman_conf() {
  mkdir -p "$PD"
  # root lacks CAP_SYS_RESOURCE here, so podman's default rlimits for root (nofile=1048576,
  # nproc=4194304) cannot be applied: clamp to the hard limits (see anchors-results.md)
  local nofile nproc pidmax
  nofile=$(ulimit -Hn); nproc=$(ulimit -Hu); pidmax=$(cat /proc/sys/kernel/pid_max)
  [ "$nofile" = unlimited ] && nofile=1048576
  { [ "$nproc" = unlimited ] || [ "$nproc" -gt "$pidmax" ]; } && nproc=$pidmax
  cat >"$PD/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=$nproc:$nproc"]
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "$PD/events.log"
tmp_dir = "$PD/tmp"
runtime = "runc"
[network]
network_config_dir = "$PD/net"
EOF
  printf '[storage]\ndriver = "overlay"\nrunroot = "%s/run"\ngraphroot = "%s/root"\n' "$PD" "$PD" >"$PD/storage.conf"
  printf 'unqualified-search-registries = []\n' >"$PD/registries.conf"
  export CONTAINERS_CONF=$PD/containers.conf CONTAINERS_STORAGE_CONF=$PD/storage.conf CONTAINERS_REGISTRIES_CONF=$PD/registries.conf
}

podman_setup() {
  [ "$SKIP_PODMAN" = 1 ] && return 0
  command -v podman >/dev/null || { rec_fail podman setup "podman" "podman not installed"; return 0; }
  log "== podman: private storage, runc"
  local d; for d in /sys/fs/cgroup/*/libpod_parent; do [ -d "$d" ] && PODMAN_CG_EXISTED+=("$d"); done
  PODMAN_SHM_BEFORE=$(ls /dev/shm 2>/dev/null | xargs)
  podman_conf
  P import -q "$BENCH/busybox.tar" busybox:latest >/dev/null 2>"$LOGS/podman.import.log" \
    || { rec_fail podman setup "import" "$(tail -2 "$LOGS/podman.import.log")"; return 0; }
  PODMAN_OK=1
}

podman_latency() {
  [ "$PODMAN_OK" = 1 ] || return 0
  log "== podman: run latency"
  local c="podman --root $PD/root --runroot $PD/run --runtime runc --cgroup-manager cgroupfs"
  bench podman run_rm "run --rm busybox true" podman -N "$c run --rm --network none busybox true"
  bench podman create_rm "create + rm (never started)" podman "id=\$($c create --network none busybox true) && $c rm \$id >/dev/null"
  bench podman cli_version "CLI round trip: version (no daemon)" podman -N "$c version"
}

podman_rest() {
  [ "$PODMAN_OK" = 1 ] || return 0
  local c="podman --root $PD/root --runroot $PD/run --runtime runc --cgroup-manager cgroupfs"
  log "== podman: $NCONT running containers"
  local t0 i
  t0=$(now_ms)
  for i in $(seq "$NCONT"); do
    P run -d --network none --name "bb-sleep-$i" busybox sleep 100000 >/dev/null || { rec_fail podman start_n "start" "#$i failed"; break; }
  done
  rec_val podman start_n "$NCONT x run -d busybox sleep (sequential), total" "$(( $(now_ms) - t0 ))" ms podman
  sleep 3
  local sh n ks ps
  sh=$(pids_matching "^/usr/bin/conmon .*$PD/" | xargs); n=$(echo $sh | wc -w)
  ks=$(mem_kib Rss $sh); ps=$(mem_kib Pss $sh)
  rec_val podman shims_n "per-container processes found (conmon; podman has no daemon)" "$n" ""
  rec_val podman rss_shim_each "RSS per conmon, mean of $n" "$(per "$ks" "$n")" MiB
  rec_val podman pss_shim_each "PSS per conmon, mean of $n" "$(per "$ps" "$n")" MiB
  rec_val podman rss_percont "RSS per container: (daemon growth + shims) / $NCONT" "$(per "$ks" "$NCONT")" MiB
  rec_val podman pss_percont "PSS per container: (daemon growth + shims) / $NCONT" "$(per "$ps" "$NCONT")" MiB
  rec_val podman rss_total_n "RSS total (daemon + shims) with $NCONT running" "$(mib "$ks")" MiB
  rec_val podman pss_total_n "PSS total (daemon + shims) with $NCONT running" "$(mib "$ps")" MiB
  bench podman ps_running "ps with $NCONT running" podman -N "$c ps"
  timed podman rmf_n "rm -f of $NCONT running (one call)" podman "$BULK_TIMEOUT" $c rm -f -t 0 $(P ps -aq)

  log "== podman: $NSTART x run -d"
  t0=$(now_ms)
  for i in $(seq "$NSTART"); do
    P run -d --network none busybox sleep 100000 >/dev/null || { rec_fail podman start_many "start" "#$i failed"; break; }
  done
  rec_val podman start_many "$NSTART x run -d busybox sleep (sequential), total" "$(( $(now_ms) - t0 ))" ms podman
  timed podman rmf_many "rm -f of $NSTART running (one call)" podman "$BULK_TIMEOUT" $c rm -f -t 0 $(P ps -aq)

  if [ "$NPS" -gt 0 ]; then
    log "== podman: ps -a with $NPS created containers (podman create, 4 parallel)"
    t0=$(now_ms)
    seq "$NPS" | xargs -P 4 -I{} timeout 120 podman --root "$PD/root" --runroot "$PD/run" --runtime runc \
      --cgroup-manager cgroupfs create --network none --name bbc-{} busybox true >/dev/null 2>"$LOGS/podman.create_many.log"
    rec_val podman create_cli "$NPS x podman create (4 parallel), total" "$(( $(now_ms) - t0 ))" ms podman
    rec_val podman created "containers present for ps -a" "$(P ps -aq | wc -l)" ""
    bench podman ps_a_many "ps -a with $NPS created containers" podman -N "$c ps -a"
    timed podman rm_many "rm of $NPS created containers (container prune)" podman "$BULK_TIMEOUT" $c container prune -f
  fi
  podman_stop
}

podman_stop() {
  [ -f "$PD/containers.conf" ] || return 0
  timeout "$BULK_TIMEOUT" podman --root "$PD/root" --runroot "$PD/run" --runtime runc --cgroup-manager cgroupfs rm -af -t 0 >/dev/null 2>&1
  local s; for s in $(pids_matching "^/usr/bin/conmon .*$PD/"); do stop_pid "$s" conmon; done
  local h keep d p
  for h in /sys/fs/cgroup/*/libpod_parent; do
    [ -d "$h" ] || continue
    keep=0; for d in "${PODMAN_CG_EXISTED[@]}"; do [ "$d" = "$h" ] && keep=1; done
    [ $keep = 1 ] && continue
    for p in $(find "$h" -name cgroup.procs -exec cat {} + 2>/dev/null); do kill -KILL "$p" 2>/dev/null; done
    sleep 0.2
    find "$h" -depth -type d -exec rmdir {} \; 2>/dev/null
  done
  # podman's shared-memory lock file is not under --root; drop it if we created it
  if [ -z "$(pgrep -x conmon)" ] && [ -e /dev/shm/libpod_lock ] && [[ " $PODMAN_SHM_BEFORE " != *" libpod_lock "* ]]; then
    rm -f /dev/shm/libpod_lock
  fi
}

# --------------------------------------------------------------- teardown ---
berth_cleanup() {  # sock daemon-pid exec-root data-root
  local sock=$1 dpid=$2 exec=$3 root=$4 id
  if [ -n "$dpid" ] && [ -d "/proc/$dpid" ] && [ -S "$sock" ]; then
    for id in $(curl -sS --max-time 10 --unix-socket "$sock" 'http://x/v1.41/containers/json?all=1' 2>/dev/null | jq -r '.[].Id' 2>/dev/null); do
      curl -sS --max-time 30 --unix-socket "$sock" -X DELETE "http://x/v1.41/containers/$id?force=1" >/dev/null 2>&1
    done
  fi
  stop_pid "$dpid" berthd
  # shims that outlived the daemon (by design they do) and what runs in their containers
  local s ids
  ids=$( { ls "$exec/shims" 2>/dev/null; ls "$root/containers" 2>/dev/null; } | sort -u)
  local cg p
  for id in $ids; do
    for cg in /sys/fs/cgroup/*"$BERTH_CG_PARENT"/berth/"$id"; do
      [ -d "$cg" ] || continue
      for p in $(cat "$cg/cgroup.procs" 2>/dev/null); do kill -KILL "$p" 2>/dev/null; done
    done
  done
  for s in $(pids_matching "berth-shim run .*$exec/"); do stop_pid "$s" berth-shim; done
}

teardown() {
  set +e
  log "teardown"
  # the sections' own containers, networks and namespaces first, while the daemons still run
  operate_cleanup
  network_cleanup
  berth_cleanup "$SOCK" "$BERTHD_PID" "$BEXEC" "$BROOT"
  [ -n "$TRACED_BERTHD_PID" ] && berth_cleanup "$BENCH/t.sock" "$TRACED_BERTHD_PID" "$BENCH/t/r" "$BENCH/t/root"
  stop_pid "$STRACE_PID" strace
  runc --root "$BENCH/runc-state" delete -f berth-bench-runc >/dev/null 2>&1
  docker_stop
  podman_stop
  sleep 0.5
  # mounts that appeared under our directory (container rootfs, overlay, dockerd's own bind), plus
  # the netns bind podman may add
  findmnt -rn -o TARGET | sort -u >"$RESULTS/mounts.after"
  comm -13 "$RESULTS/mounts.before" "$RESULTS/mounts.after" | grep -E "^($BENCH|/run/netns|/run/docker|/run/containerd)" | sort -r |
    while read -r m; do umount "$m" 2>/dev/null || umount -l "$m"; log "unmounted $m"; done
  # berth container cgroups: <parent>/berth/<id> in every hierarchy; <parent>/berth itself if ours
  local d keep e
  if [ -n "$BERTH_CG_PARENT" ]; then
    for d in /sys/fs/cgroup/*"$BERTH_CG_PARENT"/berth; do
      [ -d "$d" ] || continue
      for e in $( { ls "$BEXEC/shims" "$BENCH/t/r/shims" "$BROOT/containers" "$BENCH/t/root/containers"; } 2>/dev/null | sort -u); do
        [ -d "$d/$e" ] && rmdir "$d/$e" 2>/dev/null
      done
      keep=0; for e in "${BERTH_CG_EXISTED[@]}"; do [ "$e" = "$d" ] && keep=1; done
      [ $keep = 0 ] && rmdir "$d" 2>/dev/null
    done
    for d in /sys/fs/cgroup/*"$BERTH_CG_PARENT"/berth-bench-runc; do [ -d "$d" ] && rmdir "$d" 2>/dev/null; done
    local left; left=$(ls -d /sys/fs/cgroup/*"$BERTH_CG_PARENT"/berth/* 2>/dev/null | grep -E '/[0-9a-f]{64}$' | head -3)
    [ -n "$left" ] && log "WARNING: berth cgroups left: $left"
  fi
  # berthd leaves its default bridge and nftables table when it stops, as dockerd does; ours
  # have private names, and are removed unless they were there before the run
  local br
  for br in "$BERTH_BRIDGE" "$TRACED_BRIDGE"; do
    [[ " $BRIDGES_BEFORE " == *" $br "* ]] && continue
    ip link delete "$br" 2>/dev/null && log "removed bridge $br"
    nft delete table inet "$br" 2>/dev/null
  done
  # iptables rules and chains dockerd (iptables on) and netavark added for the network section
  network_revert
  # network state: dockerd runs with --iptables=false --ip-forward=false --bridge=none and
  # docker_stop reverts what changed while it ran; a change outside that window is not ours
  # (other work on a shared host), so it is only reported
  local pol; pol=$(iptables -S FORWARD 2>/dev/null | awk '/^-P FORWARD/{print $3}')
  [ "$(sysctl -n net.ipv4.ip_forward)" != "$IPFWD_BEFORE" ] && log "note: net.ipv4.ip_forward is $(sysctl -n net.ipv4.ip_forward) (was $IPFWD_BEFORE at start; not changed by this run's engines)"
  [ "$pol" != "$FWD_POLICY_BEFORE" ] && log "note: FORWARD policy is $pol (was $FWD_POLICY_BEFORE at start; not changed by this run's engines)"
  # engine directories that did not exist before: removed when nothing but empty dirs is left
  for d in $SYSTEM_DIRS; do
    [ -e "$d" ] || continue
    [[ " $SYSTEM_DIRS_BEFORE " == *" $d "* ]] && continue
    find "$d" -depth -type d -empty -delete 2>/dev/null
    [ -e "$d" ] && log "note: $d was created during the run and is not empty; left in place"
  done
  local p alive=0
  for p in "${STARTED_PIDS[@]}"; do [ -n "$p" ] && [ -d "/proc/$p" ] && { log "WARNING: started PID $p still alive"; alive=1; }; done
  if [ "${KEEP:-0}" != 1 ] && [ $alive = 0 ] && ! findmnt -rn -o TARGET | grep -q "^$BENCH"; then
    rm -rf "$BENCH"
  else
    log "kept $BENCH"
  fi
  log "results in $RESULTS"
}

# ---------------------------------------------------------------- summary ---
summary() {
  python3 - "$RES" <<'EOF' | tee "$RESULTS/summary.md"
import sys, collections
rows = collections.OrderedDict()
for line in open(sys.argv[1]):
    f = line.rstrip('\n').split('\t')
    if len(f) < 10:
        continue
    eng, key, desc, val, unit, mn, mx, n, load, via = f[:10]
    rows.setdefault(key, {'desc': desc, 'unit': ''})
    if val != 'FAILED':  # a FAILED row carries its reason where the unit goes
        rows[key]['unit'] = unit
    cell = val if val == 'FAILED' else (f'{val} [{mn}–{mx}]' if mn else val)
    rows[key][eng] = cell
    rows[key]['desc'] = desc if eng == 'berth' or 'desc' not in rows[key] else rows[key]['desc']
engs = ['berth', 'berth-dockercli', 'docker', 'podman']
rows = collections.OrderedDict((k, r) for k, r in rows.items() if any(e in r for e in engs))
print('| row | unit | berth (berth CLI) | berth (docker CLI) | docker 20.10 | podman 4.3 |')
print('|---|---|---|---|---|---|')
for key, r in rows.items():
    print('| ' + ' | '.join([r['desc'], r['unit']] + [r.get(e, '') for e in engs]) + ' |')
print()
for line in open(sys.argv[1]):
    f = line.rstrip('\n').split('\t')
    if len(f) >= 10 and f[0] in ('ref', 'host'):
        print(f'- {f[2]}: {f[3]} {f[4]}' + (f' [{f[5]}–{f[6]}]' if f[5] else ''))
EOF
}

# ------------------------------------------------------------------- main ---
main() {
  [ "$(id -u)" = 0 ] || { echo "run as root: sudo bash bench/run.sh" >&2; exit 1; }
  command -v hyperfine >/dev/null || { echo "hyperfine is required (apt-get install hyperfine)" >&2; exit 1; }
  mkdir -p "$BENCH" "$JSON" "$LOGS"
  : >"$RES"
  findmnt -rn -o TARGET | sort -u >"$RESULTS/mounts.before"
  local p; for p in $SYSTEM_DIRS; do [ -e "$p" ] && SYSTEM_DIRS_BEFORE+=" $p"; done
  IPFWD_BEFORE=$(sysctl -n net.ipv4.ip_forward)
  for p in "$BERTH_BRIDGE" "$TRACED_BRIDGE"; do ip link show "$p" >/dev/null 2>&1 && BRIDGES_BEFORE+=" $p"; done
  FWD_POLICY_BEFORE=$(iptables -S FORWARD 2>/dev/null | awk '/^-P FORWARD/{print $3}')
  trap teardown EXIT
  trap 'exit 130' INT TERM
  install_pkgs
  build
  make_image_tar
  write_breakdown_py
  local waited=0
  while awk -v l="$(load1)" -v q="${QUIET_LOAD:-1.5}" 'BEGIN{exit !(l > q)}' && [ $waited -lt "${QUIET_WAIT:-120}" ]; do
    [ $waited = 0 ] && log "load1 $(load1) > ${QUIET_LOAD:-1.5}; waiting up to ${QUIET_WAIT:-120}s for a quieter host"
    sleep 10; waited=$((waited + 10))
  done
  facts
  rec_val host load1_start "load1 at start" "$(load1)" ""

  # all engines up first, so that the latency rows of the three run back to back (same host load)
  berth_setup
  docker_setup
  podman_setup
  if has_section core; then
    runc_floor
    berth_latency
    docker_latency
    podman_latency
    berth_density
    berth_start_many
    berth_ps_many
    berth_cleanup "$SOCK" "$BERTHD_PID" "$BEXEC" "$BROOT"; BERTHD_PID=""
    berth_breakdown
    docker_rest
    podman_rest
  fi
  # the core rows stop every engine at their end; the later sections start them again
  if has_section operate; then berth_up; docker_up; operate_section; fi
  if has_section network; then berth_up; docker_up; network_section; fi
  rec_val host load1_end "load1 at end" "$(load1)" ""
  echo "loadavg at end: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$RESULTS/facts.txt"

  echo
  cat "$RESULTS/facts.txt"
  echo
  summary
  echo
  [ -f "$RESULTS/breakdown.txt" ] && cat "$RESULTS/breakdown.txt"
  echo "raw: $RESULTS (results.tsv, json/, logs/, trace/)"
}

main "$@"
