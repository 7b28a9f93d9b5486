#!/usr/bin/env bash
# bench/lib.sh - helpers the benchmark scripts share (sourced, not run).

log()   { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
load1() { cut -d' ' -f1 /proc/loadavg; }
# PIDs whose cmdline (NUL -> space) matches an ERE
pids_matching() {
  local re=$1 d c
  for d in /proc/[0-9]*; do
    c=$( { tr '\0' ' ' <"$d/cmdline"; } 2>/dev/null ) || continue
    [ -n "$c" ] && [[ $c =~ $re ]] && echo "${d#/proc/}"
  done
}
wait_gone() { local p=$1 n=${2:-100}; while [ -d "/proc/$p" ] && [ "$n" -gt 0 ]; do sleep 0.1; n=$((n-1)); done; [ ! -d "/proc/$p" ]; }
stop_pid() {  # pid name: TERM, wait, then KILL - only this PID
  local p=$1 name=$2
  [ -n "$p" ] && [ -d "/proc/$p" ] || return 0
  kill -TERM "$p" 2>/dev/null
  wait_gone "$p" 150 || { log "$name ($p) ignored TERM, sending KILL"; kill -KILL "$p" 2>/dev/null; wait_gone "$p" 50; }
}
