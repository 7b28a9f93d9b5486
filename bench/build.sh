#!/usr/bin/env bash
# bench/build.sh - build benchmarks for berth beside Docker 20.10's classic builder and podman
# build, in one run on this host.
#
# The 8-step Dockerfile of the build issue (WORKDIR, COPY 50 MB, RUN, ENV, CMD, LABEL, EXPOSE,
# USER) is the one of ../shared/bench/anchors.sh's build section, which this script runs
# twice: against a private release berthd (ENGINE_HOST, the docker CLI sending a context tar
# as docker and compose do) and against its own private dockerd (plus podman build). Then it
# times the berth CLI on the same context (which a local daemon reads in place) and context
# hashing on a 500 MB context.
#
# Usage:   sudo bash bench/build.sh
# Env knobs: RUNS=10 WARMUP=2, SKIP_BUILD=1 (use target/release as is), SKIP_DOCKER=1,
#            RESULTS=dir (default /tmp/berth-build-bench-<date>), ANCHORS=path to anchors.sh
# Output: $RESULTS/summary.md and the anchors runs' results.tsv files.
set -uo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/lib.sh
. "$REPO/bench/lib.sh"
RUNS=${RUNS:-10}
WARMUP=${WARMUP:-2}
ANCHORS=${ANCHORS:-$REPO/../shared/bench/anchors.sh}
RESULTS=${RESULTS:-/tmp/berth-build-bench-$(date -u +%Y%m%dT%H%M%SZ)}
BENCH=/tmp/bbb-$$
BIN=$BENCH/bin
SOCK=$BENCH/berth.sock
BERTHD_PID=""
export DOCKER_CLI_HINTS=false


cleanup() {
  stop_pid "$BERTHD_PID" berthd
  # A failed run may leave step containers; their shims are ours by binary and exec root.
  local p
  for p in $(pids_matching "^$BIN/berth-shim .*$BENCH/"); do kill -KILL "$p" 2>/dev/null; done
  grep " $BENCH" /proc/self/mounts | awk '{print $2}' | sort -r | while read -r m; do umount -l "$m"; done
  ip link del bbb0 2>/dev/null
  nft delete table inet bbb0 2>/dev/null
  rm -rf "$BENCH"
}
trap cleanup EXIT

mkdir -p "$RESULTS" "$BIN"
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  log "cargo build --release"
  (cd "$REPO" && cargo build --release -p berth-daemon -p berth-runtime -p berth-cli \
    && cargo build --release -p berth-build --example hash_context) >"$RESULTS/build.log" 2>&1 \
    || { tail -20 "$RESULTS/build.log"; exit 1; }
fi
for b in berthd berth-shim berth examples/hash_context; do cp "$REPO/target/release/$b" "$BIN/"; done

log "start a private berthd"
"$BIN/berthd" -H "unix://$SOCK" --data-root "$BENCH/root" --exec-root "$BENCH/r" \
  --bridge-name bbb0 --default-address-pool base=10.231.0.0/16,size=24 \
  >"$RESULTS/berthd.log" 2>&1 &
BERTHD_PID=$!
for _ in $(seq 300); do curl -fsS --unix-socket "$SOCK" http://x/_ping >/dev/null 2>&1 && break; sleep 0.05; done

log "anchors build section against berthd (docker CLI, context tar)"
ENGINE_HOST=unix://$SOCK ENGINE_LABEL=berth ENGINE_PIDS=$BERTHD_PID SECTIONS=build \
  BUILDKIT_CLI=none RUNS=$RUNS WARMUP=$WARMUP SKIP_INSTALL=1 KEEP_DATA=1 \
  ANCHOR=$BENCH/anchor-berth bash "$ANCHORS" >"$RESULTS/anchors-berth.txt" 2>&1
cp "$BENCH/anchor-berth/out/results.tsv" "$RESULTS/anchors-berth.tsv" 2>/dev/null

CTX=$BENCH/anchor-berth/work/ctx
export DOCKER_HOST=unix://$SOCK
B="$BIN/berth -H unix://$SOCK --no-autostart"
if [ -f "$CTX/Dockerfile" ]; then
  log "berth CLI rows (context read in place, and as a tar)"
  $B build -q -t bbb:warm "$CTX" >/dev/null
  hyperfine --style basic -w "$WARMUP" -r "$RUNS" --export-json "$RESULTS/berth-cli.json" \
    -n "berth build, all cached (in place)" "$B build -q -t bbb:warm $CTX" \
    -n "berth build, all cached (tar)" "BERTH_BUILD_TAR=1 $B build -q -t bbb:warm $CTX" \
    -n "berth build --no-cache" "$B build -q --no-cache -t bbb:cold $CTX" \
    >"$RESULTS/berth-cli.txt" 2>&1
fi

log "context hashing, 500 MB in 10 files plus 2000 small ones, page cache warm"
HCTX=$BENCH/hash-ctx
mkdir -p "$HCTX/small"
for i in $(seq 10); do head -c 50M /dev/urandom >"$HCTX/big$i"; done
for i in $(seq 2000); do head -c 4K /dev/urandom >"$HCTX/small/f$i"; done
cat "$HCTX"/big* >/dev/null
for _ in 1 2 3; do "$BIN/hash_context" "$HCTX"; done >"$RESULTS/hashing.txt"
rm -rf "$HCTX"

stop_pid "$BERTHD_PID" berthd; BERTHD_PID=""
unset DOCKER_HOST

if [ "${SKIP_DOCKER:-0}" != 1 ]; then
  log "anchors build section against a private dockerd 20.10 (and podman build)"
  SECTIONS="build podman" BUILDKIT_CLI=none RUNS=$RUNS WARMUP=$WARMUP SKIP_INSTALL=1 \
    ANCHOR=$BENCH/anchor-docker bash "$ANCHORS" >"$RESULTS/anchors-docker.txt" 2>&1
  cp "$BENCH/anchor-docker/out/results.tsv" "$RESULTS/anchors-docker.tsv" 2>/dev/null
fi

{
  echo "# build benchmarks $(date -u +%FT%TZ), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
  echo
  echo "## anchors build section (median ms)"
  cat "$RESULTS"/anchors-*.tsv 2>/dev/null | grep -i build
  echo
  echo "## berth CLI"
  grep -E "^(Benchmark|  Time)" "$RESULTS/berth-cli.txt" 2>/dev/null
  echo
  echo "## context hashing"
  cat "$RESULTS/hashing.txt"
} >"$RESULTS/summary.md"
cat "$RESULTS/summary.md"
