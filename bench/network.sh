# bench/network.sh - the "network" section of bench/run.sh; sourced by it, not run alone:
#   SECTIONS=network sudo -E bash bench/run.sh
#
# Rows, for berth, dockerd 20.10 and podman 4.3 in the same run:
#   net_run_rm_*   `run --rm busybox true` on a user bridge network and with `--network none`,
#                  NET_RUNS pairs interleaved (bench/interleave.py), and the bridge's cost: the
#                  median of the per-pair differences
#   c2c            TCP throughput container -> container on one user bridge network (iperf3
#                  client exec'd in one container, server in another), beside the same between
#                  two plain network namespaces this script makes itself (`ref`: a bridge, two
#                  veths, two netns, no engine, the containers' MTU)
#   pub_lo         host -> 127.0.0.1:PORT published into a container (docker 20.10: its userland
#                  proxy, docker-proxy, carries loopback traffic)
#   pub_host       host -> the host's own non-loopback address:PORT (DNAT for all three)
#   host_direct    `ref`: host -> the plain namespace's address, routed through its bridge, no NAT
# Throughput paths run in IPERF_ROUNDS rounds, every path once per round, so host load drifts hit
# them alike; each test is `iperf3 -t IPERF_SECS -O 1` (one TCP stream, the first second left
# out), the figure the receiver's bits per second, reported as median [min-max] over rounds.
# The iperf3 image is the busybox rootfs plus the host's /usr/bin/iperf3 and the shared
# libraries `ldd` lists, imported into each engine as bbiperf:latest.
#
# Host state this section changes, and how it is undone (network_cleanup, network_revert, both
# also run from run.sh's teardown trap):
#   - dockerd is restarted with `--iptables=true --ip-forward=false --bridge=none`, so that its
#     published ports work as docker's usually do (DNAT, plus docker-proxy for loopback); the
#     iptables rules and chains that appear meanwhile and name DOCKER, NETAVARK (podman's
#     netavark) or this section's bridges and subnets are deleted again, nothing else
#   - networks bbnet (berth, bridge bbnet0), dbnet (docker, dbnet0), pbnet (podman, the podmanN
#     netavark picks: podman 4.3 cannot name it) on
#     <NET_SUBNET_BASE>.8/9/10.0/24: removed through their engines, bridges deleted if left
#   - namespaces bbase-a, bbase-b and bridge bbase0 (<NET_SUBNET_BASE>.11.0/24): deleted
#   - ip_forward and the bridge-nf-call sysctls: restored if they changed during the section

NET_RUNS=${NET_RUNS:-${RUNS:-20}}
IPERF_SECS=${IPERF_SECS:-5}
IPERF_ROUNDS=${IPERF_ROUNDS:-5}
NET_SUBNET_BASE=${NET_SUBNET_BASE:-10.215}
PORT_BASE=${PORT_BASE:-15201}
NET_BRIDGES="bbnet0 dbnet0 bbase0"   # plus podman's, once known
NET_NS="bbase-a bbase-b"
NET_SYSCTLS="net.ipv4.ip_forward net.bridge.bridge-nf-call-iptables net.bridge.bridge-nf-call-ip6tables"
NET_STARTED=0 NET_LINKS_BEFORE="" NET_NS_MADE="" HOST_IP="" NET_ENGINES=""
NET_PIDS=()
declare -A NET_SYSCTL_BEFORE=()

net_name() { case $1 in berth) echo bbnet ;; docker) echo dbnet ;; podman) echo pbnet ;; esac; }
net_port() { case $1 in berth) echo "$PORT_BASE" ;; docker) echo $((PORT_BASE + 1)) ;; podman) echo $((PORT_BASE + 2)) ;; esac; }
net_subnet() { case $1 in berth) echo "$NET_SUBNET_BASE.8.0/24" ;; docker) echo "$NET_SUBNET_BASE.9.0/24" ;; podman) echo "$NET_SUBNET_BASE.10.0/24" ;; ref) echo "$NET_SUBNET_BASE.11.0/24" ;; esac; }
# the iptables rules and chains this section may leave behind
NET_FW_RE=""

network_section() {
  log "== network section"
  command -v iperf3 >/dev/null || { rec_fail ref c2c "network section" "iperf3 is not installed"; return 0; }
  net_snapshot || return 0
  net_prepare
  net_run_rm
  net_throughput
  network_cleanup
}

net_snapshot() {
  local n c t
  for n in $NET_NS; do
    ip netns list | grep -qw "$n" && { rec_fail ref c2c "network section" "netns $n exists already"; return 1; }
  done
  for n in 8 9 10 11; do
    ip -4 route | grep -q "^$NET_SUBNET_BASE\.$n\." && { rec_fail ref c2c "network section" "$NET_SUBNET_BASE.$n.0/24 is routed already"; return 1; }
  done
  NET_FW_RE="DOCKER|NETAVARK|bbnet0|dbnet0|bbase0|${NET_SUBNET_BASE//./\\.}\\.(8|9|10|11)\\."
  for c in iptables ip6tables; do
    for t in filter nat; do $c -t $t -S >"$RESULTS/net-before.$c.$t" 2>/dev/null; done
  done
  NET_LINKS_BEFORE=$(ip -o link show | awk -F': ' '{print $2}' | cut -d@ -f1 | xargs)
  for n in $NET_SYSCTLS; do NET_SYSCTL_BEFORE[$n]=$(sysctl -n "$n" 2>/dev/null); done
  NET_STARTED=1
  local dev; dev=$(ip -4 route show default | awk '{print $5; exit}')
  HOST_IP=$(ip -4 -o addr show dev "${dev:-eth0}" scope global | awk '{print $4}' | cut -d/ -f1 | head -1)
  rec_val host host_ip "host address used for pub_host" "${HOST_IP:-none}" ""
}

net_iperf_image() {
  local r=$BENCH/iperf-rootfs lib
  rm -rf "$r"; mkdir -p "$r"
  tar -C "$r" -xf "$BENCH/busybox.tar" || return 1
  install -m 0755 "$(command -v iperf3)" "$r/bin/iperf3" || return 1
  for lib in $(ldd "$(command -v iperf3)" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}'); do
    mkdir -p "$r$(dirname "$lib")"
    cp -L "$lib" "$r$lib" || return 1
  done
  tar --numeric-owner -C "$r" -cf "$BENCH/iperf.tar" . && rm -rf "$r"
}

net_prepare() {
  local e
  if engine_ok docker; then
    log "== docker: restart dockerd with iptables on (published ports as docker does them)"
    docker_stop
    DOCKERD_NET_FLAGS=(--iptables=true --ip-forward=false --bridge=none)
    docker_up
  fi
  net_iperf_image || { rec_fail ref c2c "iperf3 image" "cannot build the iperf3 rootfs"; return 0; }
  for e in berth docker podman; do
    engine_ok "$e" || continue
    if ! E "$e" import "$BENCH/iperf.tar" bbiperf:latest >"$LOGS/$e.net-setup.log" 2>&1; then
      rec_fail "$e" c2c "network section" "import of the iperf3 image failed: $(tail -2 "$LOGS/$e.net-setup.log")"; continue
    fi
    case $e in
      # podman 4.3 cannot name the bridge (netavark picks podmanN): asked for after creation
      podman) E podman network create --subnet "$(net_subnet podman)" --disable-dns pbnet ;;
      *) E "$e" network create --subnet "$(net_subnet "$e")" -o "com.docker.network.bridge.name=$(net_name "$e")0" "$(net_name "$e")" ;;
    esac >>"$LOGS/$e.net-setup.log" 2>&1 || { rec_fail "$e" c2c "network section" "network create failed: $(tail -2 "$LOGS/$e.net-setup.log")"; continue; }
    NET_ENGINES+=" $e"
    [ "$e" = podman ] && NET_BRIDGES+=" $(E podman network inspect pbnet --format '{{.NetworkInterface}}' 2>/dev/null)"
  done
  engine_ok podman && rec_val podman net_backend "podman network backend" "$(E podman info --format '{{.Host.NetworkBackend}}' 2>/dev/null)" "" podman
  log "network section engines:$NET_ENGINES"
}

# the plain reference: bridge bbase0 (.1), namespaces bbase-a (.2, the server) and bbase-b (.3)
net_baseline() {  # mtu
  local mtu=$1 n i=2 pre=${NET_SUBNET_BASE}.11
  ip link add bbase0 type bridge || return 1
  ip link set bbase0 mtu "$mtu"
  ip addr add "$pre.1/24" dev bbase0
  ip link set bbase0 up
  for n in $NET_NS; do
    ip netns add "$n" || return 1
    NET_NS_MADE+=" $n"
    ip link add "bbv-$n" mtu "$mtu" type veth peer name eth0 mtu "$mtu" netns "$n" || return 1
    ip link set "bbv-$n" master bbase0 up
    ip -n "$n" addr add "$pre.$i/24" dev eth0
    ip -n "$n" link set eth0 up
    ip -n "$n" link set lo up
    i=$((i + 1))
  done
}

net_run_rm() {
  local e c
  for e in $NET_ENGINES; do
    c=$(ocli "$e")
    log "== $e: run --rm on $(net_name "$e") and with --network none, $NET_RUNS interleaved pairs"
    python3 "$REPO/bench/interleave.py" "$e" "$(via_of "$e")" "$JSON/$e.net_run_rm.json" "$NET_RUNS" "$WARMUP" "$(load1)" \
      net_run_rm_bridge "run --rm busybox true on a user bridge network" "$c run --rm --network $(net_name "$e") busybox true" \
      net_run_rm_none "run --rm --network none busybox true" "$c run --rm --network none busybox true" \
      net_run_rm_cost "user bridge cost: bridge - none, median of the interleaved pairs" \
      >>"$RES" 2>"$LOGS/$e.net_run_rm.log" || rec_fail "$e" net_run_rm_cost "run --rm bridge vs none" "$(tail -2 "$LOGS/$e.net_run_rm.log")"
  done
}

# one iperf3 test; prints the receiver's bits per second, or nothing
iperf_once() {  # out.json command...
  local out=$1; shift
  timeout $((IPERF_SECS + 40)) "$@" -t "$IPERF_SECS" -O 1 -J >"$out" 2>&1
  jq -r '.end.sum_received.bits_per_second // empty' "$out" 2>/dev/null
}

net_throughput() {
  local e c ip mtu=1500 dir=$RESULTS/iperf paths=() p r bps
  mkdir -p "$dir"
  # servers (published on every host address) and clients
  for e in $NET_ENGINES; do
    c=$(ocli "$e")
    if ! { timeout 120 $c run -d --name bb-ipsrv --network "$(net_name "$e")" -p "$(net_port "$e"):5201" bbiperf /bin/iperf3 -s &&
           timeout 120 $c run -d --name bb-ipcli --network "$(net_name "$e")" bbiperf sleep 100000; } >>"$LOGS/$e.net-setup.log" 2>&1; then
      rec_fail "$e" c2c "network section" "iperf3 containers did not start: $(tail -2 "$LOGS/$e.net-setup.log")"; continue
    fi
    ip=$(E "$e" inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' bb-ipsrv)
    rec_val "$e" net_mtu "MTU of a container's eth0 on the user network" "$(E "$e" exec bb-ipcli cat /sys/class/net/eth0/mtu)" ""
    [ "$e" = berth ] && mtu=$(E berth exec bb-ipcli cat /sys/class/net/eth0/mtu)
    paths+=("$e|c2c|container -> container, same user bridge network|$c exec bb-ipcli /bin/iperf3 -c $ip")
    paths+=("$e|pub_lo|host -> 127.0.0.1:PORT published|iperf3 -c 127.0.0.1 -p $(net_port "$e")")
    [ -n "$HOST_IP" ] && paths+=("$e|pub_host|host -> $HOST_IP:PORT published (host's own address)|iperf3 -c $HOST_IP -p $(net_port "$e")")
  done
  if net_baseline "$mtu" >>"$LOGS/ref.net-setup.log" 2>&1; then
    ip netns exec bbase-a iperf3 -s >"$LOGS/ref.iperf-server.log" 2>&1 &
    NET_PIDS+=($!); STARTED_PIDS+=($!)
    rec_val ref net_mtu "MTU of the plain veths (the berth container's)" "$mtu" ""
    paths=("ref|c2c|plain netns -> netns over a bridge (two veths, no engine)|ip netns exec bbase-b iperf3 -c ${NET_SUBNET_BASE}.11.2"
           "ref|host_direct|host -> plain netns, routed through its bridge (no NAT, no proxy)|iperf3 -c ${NET_SUBNET_BASE}.11.2"
           "${paths[@]}")
  else
    rec_fail ref c2c "plain namespaces" "setup failed: $(tail -2 "$LOGS/ref.net-setup.log")"
  fi
  engine_ok docker && rec_val docker net_proxies "docker-proxy processes for the published port" \
    "$(pids_matching "docker-proxy .*-host-port $(net_port docker) " | wc -l)" ""
  sleep 1
  local l0; l0=$(load1)
  for r in $(seq "$IPERF_ROUNDS"); do
    log "== throughput round $r/$IPERF_ROUNDS (${#paths[@]} paths, ${IPERF_SECS}s each)"
    for p in "${paths[@]}"; do
      IFS='|' read -r e key desc cmd <<<"$p"
      # shellcheck disable=SC2086
      bps=$(iperf_once "$dir/$e.$key.$r.json" $cmd)
      if [ -z "$bps" ]; then sleep 1; bps=$(iperf_once "$dir/$e.$key.$r.json" $cmd); fi
      [ -n "$bps" ] && echo "$bps" >>"$dir/$e.$key.bps" || log "iperf3 failed: $e $key round $r (see $dir/$e.$key.$r.json)"
    done
  done
  for p in "${paths[@]}"; do
    IFS='|' read -r e key desc cmd <<<"$p"
    if [ -s "$dir/$e.$key.bps" ]; then
      python3 - "$e" "$key" "$desc" "$dir/$e.$key.bps" "$l0>$(load1)" >>"$RES" <<'EOF'
import statistics, sys
e, key, desc, f, load = sys.argv[1:6]
v = [float(x) / 1e9 for x in open(f) if x.strip()]
print('\t'.join([e, key, desc + ' (iperf3, 1 TCP stream)', '%.2f' % statistics.median(v), 'Gbit/s',
                 '%.2f' % min(v), '%.2f' % max(v), str(len(v)), load, 'iperf3']))
EOF
    else
      rec_fail "$e" "$key" "$desc" "no iperf3 result (see $dir/$e.$key.*.json)"
    fi
  done
  # the targets as ratios of paths measured next to each other in the same round (medians of
  # the per-round ratios: steadier than a ratio of medians while the host load drifts)
  net_ratio berth c2c_vs_plain "berth c2c / plain netns c2c, per round" "$dir/berth.c2c.bps" "$dir/ref.c2c.bps" "$l0"
  for e in docker podman; do
    net_ratio "$e" c2c_vs_plain "$e c2c / plain netns c2c, per round" "$dir/$e.c2c.bps" "$dir/ref.c2c.bps" "$l0"
  done
  for p in pub_lo pub_host; do
    net_ratio berth "${p}_vs_docker" "berth $p / docker $p, per round" "$dir/berth.$p.bps" "$dir/docker.$p.bps" "$l0"
    net_ratio berth "${p}_vs_podman" "berth $p / podman $p, per round" "$dir/berth.$p.bps" "$dir/podman.$p.bps" "$l0"
  done
}

# median [min-max] of the per-round ratios a/b, when both paths have a figure for every round
net_ratio() {  # engine key desc a.bps b.bps load-before
  [ -s "$4" ] && [ -s "$5" ] || return 0
  python3 - "$@" "$(load1)" >>"$RES" <<'EOF'
import statistics, sys
e, key, desc, fa, fb, l0, l1 = sys.argv[1:8]
a = [float(x) for x in open(fa) if x.strip()]
b = [float(x) for x in open(fb) if x.strip()]
if len(a) == len(b) and a:
    r = [x / y for x, y in zip(a, b)]
    print('\t'.join([e, key, desc, '%.3f' % statistics.median(r), 'ratio', '%.3f' % min(r), '%.3f' % max(r),
                     str(len(r)), f'{l0}>{l1}', 'iperf3']))
EOF
}

# the section's containers, networks, namespaces and processes (idempotent)
network_cleanup() {
  [ "$NET_STARTED" = 1 ] || return 0
  local e names p n
  for e in berth docker podman; do
    engine_ok "$e" || continue
    names=$(E "$e" ps -a --format '{{.Names}}' 2>/dev/null | grep -E '^bb-ip(srv|cli)$' | xargs)
    [ -n "$names" ] && E "$e" rm -f $names >/dev/null 2>&1
    if E "$e" network ls --format '{{.Name}}' 2>/dev/null | grep -qx "$(net_name "$e")"; then
      E "$e" network rm "$(net_name "$e")" >/dev/null 2>&1 || log "network rm $(net_name "$e") failed on $e"
    fi
  done
  for p in "${NET_PIDS[@]}"; do stop_pid "$p" "iperf3 server"; done
  NET_PIDS=()
  for n in $NET_NS_MADE; do ip netns del "$n" 2>/dev/null; done
  NET_NS_MADE=""
  [[ " $NET_LINKS_BEFORE " == *" bbase0 "* ]] || ip link del bbase0 2>/dev/null
  for p in $(pids_matching "docker-proxy .*-host-port $(net_port docker) "); do stop_pid "$p" docker-proxy; done
  return 0
}

# after the daemons stopped: the firewall rules and chains they added, left-over bridges, sysctls
network_revert() {
  [ "$NET_STARTED" = 1 ] || return 0
  local c t line chain br n now
  for c in iptables ip6tables; do
    for t in nat filter; do
      [ -f "$RESULTS/net-before.$c.$t" ] || continue
      $c -t $t -S 2>/dev/null >"$RESULTS/net-after.$c.$t"
      # rules first (they reference the chains), then the chains
      grep -E '^-A ' "$RESULTS/net-after.$c.$t" | grep -E "$NET_FW_RE" | grep -vxF -f "$RESULTS/net-before.$c.$t" |
        while IFS= read -r line; do
          eval "$c -t $t -D ${line#-A }" 2>/dev/null && log "removed $c -t $t rule: $line"
        done
      grep -E '^-N ' "$RESULTS/net-after.$c.$t" | grep -vxF -f "$RESULTS/net-before.$c.$t" | awk '{print $2}' | grep -E "$NET_FW_RE" |
        while IFS= read -r chain; do $c -t $t -F "$chain" 2>/dev/null; done
      grep -E '^-N ' "$RESULTS/net-after.$c.$t" | grep -vxF -f "$RESULTS/net-before.$c.$t" | awk '{print $2}' | grep -E "$NET_FW_RE" |
        while IFS= read -r chain; do $c -t $t -X "$chain" 2>/dev/null && log "removed $c -t $t chain $chain"; done
    done
  done
  for br in $NET_BRIDGES; do
    [[ " $NET_LINKS_BEFORE " == *" $br "* ]] && continue
    ip link show "$br" >/dev/null 2>&1 && ip link del "$br" && log "removed bridge $br"
  done
  for n in $NET_SYSCTLS; do
    now=$(sysctl -n "$n" 2>/dev/null)
    if [ -n "${NET_SYSCTL_BEFORE[$n]:-}" ] && [ "$now" != "${NET_SYSCTL_BEFORE[$n]}" ]; then
      sysctl -qw "$n=${NET_SYSCTL_BEFORE[$n]}" && log "restored $n=${NET_SYSCTL_BEFORE[$n]} (was $now after the network section)"
    fi
  done
  NET_STARTED=0
}
