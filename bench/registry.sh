#!/usr/bin/env bash
# bench/registry.sh - push and pull through a local registry: berth (berthd + berth CLI)
# beside a private Docker 20.10 (dockerd + the docker CLI), one after the other on this host.
#
# The image is the one of ../shared/bench/anchors.sh's registry section: FROM a busybox
# rootfs plus four COPY layers of 50 MB random data (~202 MB), built by each engine (so
# berth's layers are stored uncompressed, as its builds store them). The registry is
# Debian's docker-registry (distribution 2.8) on 127.0.0.1, or berth-registry (REGISTRY=berth).
# Rows (hyperfine; every row has an untimed check run first):
#   push_cold     push to an empty registry (storage wiped before every run); every layer is
#                 compressed during the push. For berth the image is also removed and loaded
#                 again from a `save` tar before each run, which drops its remembered gzip copies
#   push_warm     berth only: the same with the gzip copies of earlier pushes kept (what every
#                 push after the first of an image costs)
#   push_noop     push again, the registry has every layer (HEAD checks only)
#   pull_cold     pull with the image removed locally (its layers too; the base stays)
#   pull_present  pull with every layer present (target: <= 50 ms)
# and the compression throughput berthd logged for the 50 MB layers.
#
# Usage:   sudo bash bench/registry.sh
# Env knobs (all optional):
#   RUNS=10 WARMUP=1      hyperfine runs / warmups per row
#   REGISTRY=distribution distribution (docker-registry) | berth (berth-registry serve)
#   REG_ADDR=127.0.0.1:5055   where the registry listens
#   SKIP_BUILD=1          use the existing release binaries in $CARGO_TARGET_DIR (default target/)
#   SKIP_DOCKER=1         berth rows only
#   QUIET_LOAD=1.5 QUIET_WAIT=120   wait up to QUIET_WAIT s for load1 <= QUIET_LOAD first
#   RESULTS=dir           default /tmp/berth-registry-bench-<date>
#   KEEP=1                keep $BENCH (daemon data, registry, image tar) after the run
#   DOCKER_CLI=path       the docker CLI for the docker rows (default /usr/local/bin/docker)
# Everything it starts is stopped by PID at exit (also on error or Ctrl-C); mounts that
# appeared under its directory are unmounted, berthd's private bridge and nft table removed.
# Output: $RESULTS/summary.md, results.tsv, json/, logs/.
set -uo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/lib.sh
. "$REPO/bench/lib.sh"
TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
RUNS=${RUNS:-10}
WARMUP=${WARMUP:-1}
REGISTRY=${REGISTRY:-distribution}
REG_ADDR=${REG_ADDR:-127.0.0.1:5055}
SKIP_DOCKER=${SKIP_DOCKER:-0}
DOCKER_CLI=${DOCKER_CLI:-/usr/local/bin/docker}
[ -x "$DOCKER_CLI" ] || DOCKER_CLI=$(command -v docker || echo /usr/bin/docker)
BENCH=/tmp/brb-$$
RESULTS=${RESULTS:-/tmp/berth-registry-bench-$(date -u +%Y%m%dT%H%M%SZ)}
BIN=$BENCH/bin
SOCK=$BENCH/berth.sock
DSOCK=$BENCH/docker.sock
REGDIR=$BENCH/registry
BRIDGE=brb0
POOL=base=10.233.0.0/22,size=24
IMAGE=$REG_ADDR/bench/big:latest
JSON=$RESULTS/json
LOGS=$RESULTS/logs
RES=$RESULTS/results.tsv
BERTHD_PID="" DOCKERD_PID="" CONTAINERD_PID="" REGISTRY_PID=""
STARTED_PIDS=()
BRIDGE_BEFORE=0
export DOCKER_CLI_HINTS=false


# results.tsv: engine  key  description  median  unit  min  max  n  load1(before>after)
rec_val() {   # engine key desc value unit
  printf '%s\t%s\t%s\t%s\t%s\t\t\t\t%s\n' "$1" "$2" "$3" "$4" "$5" "$(load1)" >>"$RES"
}
rec_fail() {  # engine key desc reason
  printf '%s\t%s\t%s\tFAILED\t%s\t\t\t\t%s\n' "$1" "$2" "$3" "$(echo "$4" | tr '\t\n' '  ' | cut -c1-200)" "$(load1)" >>"$RES"
  log "FAILED $1/$2: $4"
}
rec_json() {  # engine key desc json load-before
  python3 - "$@" "$(load1)" >>"$RES" <<'EOF'
import json, sys
eng, key, desc, f, l0, l1 = sys.argv[1:7]
r = json.load(open(f))["results"][0]
ms = lambda x: "%.1f" % (x * 1000)
print("\t".join([eng, key, desc, ms(r["median"]), "ms", ms(r["min"]), ms(r["max"]), str(len(r["times"])), l0 + ">" + l1]))
EOF
}

# bench ENGINE KEY DESC [--prepare CMD] CMD
bench() {
  local eng=$1 key=$2 desc=$3; shift 3
  local prep=""
  if [ "$1" = --prepare ]; then prep=$2; shift 2; fi
  local cmd=$1 lf=$LOGS/$eng.$key.log l0
  l0=$(load1)
  log "bench $eng/$key: $cmd"
  : >"$lf"
  [ -n "$prep" ] && { sh -c "$prep" >>"$lf" 2>&1 || { rec_fail "$eng" "$key" "$desc" "prepare: $(tail -n 2 "$lf")"; return 1; }; }
  if ! timeout 300 sh -c "$cmd" >>"$lf" 2>&1; then
    rec_fail "$eng" "$key" "$desc" "$(tail -n 3 "$lf")"; return 1
  fi
  local hf=(hyperfine --style basic -w "$WARMUP" -r "$RUNS" --export-json "$JSON/$eng.$key.json")
  [ -n "$prep" ] && hf+=(--prepare "$prep")
  if ! timeout 3600 "${hf[@]}" "$cmd" >>"$lf" 2>&1; then
    rec_fail "$eng" "$key" "$desc" "hyperfine: $(tail -n 2 "$lf")"; return 1
  fi
  rec_json "$eng" "$key" "$desc" "$JSON/$eng.$key.json" "$l0"
}

wait_api() {  # sock pid
  local n=0
  until curl -fsS --max-time 2 --unix-socket "$1" http://x/_ping >/dev/null 2>&1; do
    sleep 0.05; n=$((n+1))
    { [ $n -gt 1200 ] || [ ! -d "/proc/$2" ]; } && return 1
  done
  return 0
}

B() { "$BIN/berth" -H "unix://$SOCK" --no-autostart "$@"; }
D() { DOCKER_HOST="unix://$DSOCK" "$DOCKER_CLI" "$@"; }

# ------------------------------------------------------------------ setup ---
build() {
  if [ "${SKIP_BUILD:-0}" = 1 ]; then
    log "SKIP_BUILD=1: using $TARGET_DIR/release"
  else
    log "cargo build --release (berthd, berth, berth-shim, berth-registry)"
    local cargo=cargo as=()
    command -v cargo >/dev/null || cargo=${SUDO_USER:+$(getent passwd "$SUDO_USER" | cut -d: -f6)}/.cargo/bin/cargo
    [ -n "${SUDO_USER:-}" ] && [ "$SUDO_USER" != root ] && as=(sudo -u "$SUDO_USER" --preserve-env=PATH)
    (cd "$REPO" && "${as[@]}" env CARGO_TARGET_DIR="$TARGET_DIR" "$cargo" build --release \
      -p berth-daemon -p berth-runtime -p berth-cli -p berth-registry --bins) >"$LOGS/build.log" 2>&1 \
      || { log "release build failed:"; tail -20 "$LOGS/build.log" >&2; exit 1; }
  fi
  mkdir -p "$BIN"
  local b
  # private copies: a concurrent build cannot swap the binaries under a running measurement
  for b in berthd berth berth-shim berth-registry; do
    cp "$TARGET_DIR/release/$b" "$BIN/$b" || { log "missing $TARGET_DIR/release/$b"; exit 1; }
  done
}

start_registry() {
  mkdir -p "$REGDIR"
  case $REGISTRY in
    distribution)
      command -v docker-registry >/dev/null || { log "docker-registry is not installed (apt-get install docker-registry)"; exit 1; }
      cat >"$REGDIR/config.yml" <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $REGDIR/storage
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: $REG_ADDR
  secret: berth-bench-not-secret
EOF
      docker-registry serve "$REGDIR/config.yml" >"$LOGS/registry.log" 2>&1 &
      WIPE="rm -rf $REGDIR/storage/docker"
      ;;
    berth)
      "$BIN/berth-registry" serve --addr "$REG_ADDR" --root "$REGDIR/storage" >"$LOGS/registry.log" 2>&1 &
      WIPE="rm -rf $REGDIR/storage/repositories && find $REGDIR/storage/content/blobs -type f -delete"
      ;;
    *) log "REGISTRY must be distribution or berth"; exit 1 ;;
  esac
  REGISTRY_PID=$!
  STARTED_PIDS+=("$REGISTRY_PID")
  local n=0
  until curl -fsS "http://$REG_ADDR/v2/" >/dev/null 2>&1; do
    sleep 0.1; n=$((n+1))
    [ $n -gt 100 ] && { log "registry did not come up:"; tail -5 "$LOGS/registry.log" >&2; exit 1; }
  done
  log "$REGISTRY registry PID $REGISTRY_PID on $REG_ADDR"
}

make_context() {  # anchors.sh's make_big_image: 4 x 50 MB random files on top of bb
  bash "$REPO/scripts/make-busybox-rootfs.sh" "$BENCH/bb.tar" >"$LOGS/rootfs.log" 2>&1 \
    || { log "cannot make the busybox rootfs"; tail -3 "$LOGS/rootfs.log" >&2; exit 1; }
  local c=$BENCH/ctx i
  mkdir -p "$c"
  printf 'FROM bb\n' >"$c/Dockerfile"
  for i in 1 2 3 4; do
    head -c 50M /dev/urandom >"$c/l$i.bin"
    printf 'COPY l%s.bin /data/l%s.bin\n' "$i" "$i" >>"$c/Dockerfile"
  done
}

facts() {
  {
    echo "date: $(date -u +%FT%TZ)"
    echo "host: $(. /etc/os-release; echo "$PRETTY_NAME"), kernel $(uname -r), $(nproc) CPUs, $(awk '/MemTotal/{printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
    echo "berth: git $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null) + $(git -C "$REPO" status --porcelain 2>/dev/null | wc -l) uncommitted paths; release profile"
    if [ "$REGISTRY" = distribution ]; then
      echo "registry: docker-registry $(docker-registry --version 2>/dev/null | awk '{print $3}') on $REG_ADDR"
    else
      echo "registry: berth-registry (this build) on $REG_ADDR"
    fi
    echo "docker: $(dockerd --version 2>/dev/null); CLI $("$DOCKER_CLI" version --format '{{.Client.Version}}' 2>/dev/null); hyperfine $(hyperfine --version | awk '{print $2}')"
    echo "knobs: RUNS=$RUNS WARMUP=$WARMUP"
    echo "loadavg at start: $(cut -d' ' -f1-3 /proc/loadavg)"
  } >"$RESULTS/facts.txt"
}

# ------------------------------------------------------------------ berth ---
berth_rows() {
  log "== berth: private berthd on $SOCK"
  "$BIN/berthd" -H "unix://$SOCK" --data-root "$BENCH/root" --exec-root "$BENCH/r" \
    --bridge-name "$BRIDGE" --default-address-pool "$POOL" >"$LOGS/berthd.log" 2>&1 &
  BERTHD_PID=$!
  STARTED_PIDS+=("$BERTHD_PID")
  wait_api "$SOCK" "$BERTHD_PID" || { log "berthd did not come up:"; tail -5 "$LOGS/berthd.log" >&2; exit 1; }
  B import -c 'ENV PATH=/bin' -c 'CMD ["/bin/sh"]' "$BENCH/bb.tar" bb:latest >/dev/null || { log "berth import failed"; exit 1; }
  B build -q -t "$IMAGE" "$BENCH/ctx" >"$LOGS/berth.build.log" 2>&1 || { log "berth build failed"; tail -5 "$LOGS/berth.build.log" >&2; exit 1; }
  # The build cache holds the layers (and so their gzip copies) beyond `rmi`; docker's
  # classic builder keeps nothing the rmi does not remove. Drop it, like for like.
  B builder prune -af >/dev/null || { log "berth builder prune failed"; exit 1; }
  rec_val berth size "image size (uncompressed)" "$(B image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.1f", $1/1048576}')" MiB
  B save -o "$BENCH/big-berth.tar" "$IMAGE" || { log "berth save failed"; exit 1; }
  local b="$BIN/berth -H unix://$SOCK --no-autostart"
  # The reload drops the gzip copies berth remembers, so that every run compresses.
  bench berth push_cold "push 4x50 MB, empty registry, layers compressed in the push" \
    --prepare "$WIPE && $b rmi -f $IMAGE >/dev/null && $b load -q -i $BENCH/big-berth.tar >/dev/null" \
    "$b push -q $IMAGE"
  grep -a 'compressed layer' "$LOGS/berthd.log" | sed 's/\x1b\[[0-9;]*m//g' \
    | awk '{for (i = 1; i <= NF; i++) if ($i ~ /^(input|mb_per_s|ms|commit_ms)=/) { split($i, kv, "="); v[kv[1]] = kv[2] } }
           v["input"] > 40000000 { n++; s += v["mb_per_s"]; t += v["ms"]; c += v["commit_ms"] }
           END { if (n) printf "%.0f\t%.0f\t%.0f\t%d\n", s / n, t / n, c / n, n }' \
    >"$RESULTS/compression.tsv"
  if [ -s "$RESULTS/compression.tsv" ]; then
    read -r mbps ms commit n <"$RESULTS/compression.tsv"
    rec_val berth gzip_mbps "gzip of one 50 MB random layer, 4 at once on $(nproc) CPUs (mean of $n, berthd log): throughput" "$mbps" MB/s
    rec_val berth gzip_ms "  the same: time reading + compressing + writing" "$ms" ms
    rec_val berth gzip_commit_ms "  then fsync + rename into the content store" "$commit" ms
  fi
  bench berth push_warm "push 4x50 MB, empty registry, gzip copies kept" \
    --prepare "$WIPE" "$b push -q $IMAGE"
  bench berth push_noop "push again, registry has every layer" "$b push -q $IMAGE"
  bench berth pull_cold "pull 4x50 MB, image removed locally" \
    --prepare "$b rmi -f $IMAGE >/dev/null 2>&1; true" "$b pull -q $IMAGE"
  bench berth pull_present "pull, every layer present" "$b pull -q $IMAGE"
  stop_pid "$BERTHD_PID" berthd
}

# ----------------------------------------------------------------- docker ---
docker_rows() {
  [ "$SKIP_DOCKER" = 1 ] && return 0
  command -v dockerd >/dev/null || { rec_fail docker setup "dockerd" "dockerd is not installed"; return 0; }
  log "== docker: private dockerd on $DSOCK"
  dockerd --data-root "$BENCH/docker" --exec-root "$BENCH/dx" --pidfile "$BENCH/dockerd.pid" -H "unix://$DSOCK" \
    --iptables=false --ip-forward=false --bridge=none >"$LOGS/dockerd.log" 2>&1 &
  DOCKERD_PID=$!
  STARTED_PIDS+=("$DOCKERD_PID")
  wait_api "$DSOCK" "$DOCKERD_PID" || { rec_fail docker setup "dockerd" "did not come up: $(tail -2 "$LOGS/dockerd.log")"; return 0; }
  CONTAINERD_PID=$(pgrep -P "$DOCKERD_PID" -x containerd | head -1)
  STARTED_PIDS+=("$CONTAINERD_PID")
  D import -c 'ENV PATH=/bin' -c 'CMD ["/bin/sh"]' "$BENCH/bb.tar" bb:latest >/dev/null || { rec_fail docker setup import "docker import failed"; return 0; }
  DOCKER_BUILDKIT=0 D build -q -t "$IMAGE" "$BENCH/ctx" >"$LOGS/docker.build.log" 2>&1 || { rec_fail docker setup build "$(tail -2 "$LOGS/docker.build.log")"; return 0; }
  rec_val docker size "image size (uncompressed)" "$(D image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.1f", $1/1048576}')" MiB
  local d="env DOCKER_HOST=unix://$DSOCK $DOCKER_CLI"
  bench docker push_cold "push 4x50 MB, empty registry, layers compressed in the push" \
    --prepare "$WIPE" "$d push -q $IMAGE"
  bench docker push_noop "push again, registry has every layer" "$d push -q $IMAGE"
  bench docker pull_cold "pull 4x50 MB, image removed locally" \
    --prepare "$d rmi -f $IMAGE >/dev/null 2>&1; true" "$d pull -q $IMAGE"
  bench docker pull_present "pull, every layer present" "$d pull -q $IMAGE"
  docker_stop
}

docker_stop() {
  [ -n "$DOCKERD_PID" ] || return 0
  stop_pid "$DOCKERD_PID" dockerd
  stop_pid "$CONTAINERD_PID" containerd
  local s; for s in $(pids_matching "containerd-shim.*$BENCH/dx/"); do stop_pid "$s" containerd-shim; done
  DOCKERD_PID=""
}

# --------------------------------------------------------------- teardown ---
teardown() {
  set +e
  log "teardown"
  stop_pid "$BERTHD_PID" berthd
  docker_stop
  stop_pid "$REGISTRY_PID" registry
  sleep 0.3
  findmnt -rn -o TARGET | sort -u >"$RESULTS/mounts.after"
  comm -13 "$RESULTS/mounts.before" "$RESULTS/mounts.after" | grep -E "^($BENCH|/run/docker|/run/containerd)" | sort -r |
    while read -r m; do umount "$m" 2>/dev/null || umount -l "$m"; log "unmounted $m"; done
  if [ "$BRIDGE_BEFORE" = 0 ]; then
    ip link delete "$BRIDGE" 2>/dev/null && log "removed bridge $BRIDGE"
    nft delete table inet "$BRIDGE" 2>/dev/null
  fi
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
    if len(f) < 9:
        continue
    eng, key, desc, val, unit, mn, mx, n, load = f[:9]
    r = rows.setdefault(key, {'desc': desc, 'unit': unit})
    r[eng] = (val, mn, mx)
print('| row | unit | berth (berthd, berth CLI) | docker 20.10 | docker / berth |')
print('|---|---|---|---|---|')
for key, r in rows.items():
    cell = lambda e: '' if e not in r else (r[e][0] if not r[e][1] else f'{r[e][0]} [{r[e][1]}–{r[e][2]}]')
    ratio = ''
    try:
        ratio = '%.2f×' % (float(r['docker'][0]) / float(r['berth'][0]))
    except (KeyError, ValueError, ZeroDivisionError):
        pass
    print(f"| {r['desc']} | {r['unit']} | {cell('berth')} | {cell('docker')} | {ratio} |")
EOF
}

# ------------------------------------------------------------------- main ---
main() {
  [ "$(id -u)" = 0 ] || { echo "run as root: sudo bash bench/registry.sh" >&2; exit 1; }
  command -v hyperfine >/dev/null || { echo "hyperfine is required (apt-get install hyperfine)" >&2; exit 1; }
  mkdir -p "$BENCH" "$JSON" "$LOGS"
  : >"$RES"
  findmnt -rn -o TARGET | sort -u >"$RESULTS/mounts.before"
  ip link show "$BRIDGE" >/dev/null 2>&1 && BRIDGE_BEFORE=1
  trap teardown EXIT
  trap 'exit 130' INT TERM
  build
  make_context
  local waited=0
  while awk -v l="$(load1)" -v q="${QUIET_LOAD:-1.5}" 'BEGIN{exit !(l > q)}' && [ $waited -lt "${QUIET_WAIT:-120}" ]; do
    [ $waited = 0 ] && log "load1 $(load1) > ${QUIET_LOAD:-1.5}; waiting up to ${QUIET_WAIT:-120}s for a quieter host"
    sleep 10; waited=$((waited + 10))
  done
  facts
  start_registry
  berth_rows
  eval "$WIPE"
  docker_rows
  echo "loadavg at end: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$RESULTS/facts.txt"
  echo
  cat "$RESULTS/facts.txt"
  echo
  summary
  echo "raw: $RESULTS (results.tsv, json/, logs/)"
}

main "$@"
