#!/usr/bin/env bash
# Runs the end-to-end tests against the real Docker engine instead of berth, to check that the
# tests encode Docker's behaviour (the "oracle"). Debian's docker.io, containerd and tini packages
# are downloaded and unpacked into a private directory (nothing is installed); wrapper scripts named
# berthd and berth translate the harness's calls to dockerd and the docker CLI.
#
# Usage (as root):
#   scripts/docker-oracle.sh setup              unpack dockerd and write the wrappers
#   scripts/docker-oracle.sh run [FILTER...]    run tests/e2e against dockerd (one test at a time)
#   scripts/docker-oracle.sh python             run tests/python against dockerd
#   scripts/docker-oracle.sh cleanup            remove docker0 and the empty docker cgroups left behind
#
# dockerd creates the docker0 bridge (ip forwarding and iptables stay off) and empty "docker"
# cgroups; `run` and `python` clean those up afterwards. Known difference on this machine:
# runc cannot grant CAP_SYS_RESOURCE, so cli_run::run_privileged fails under dockerd.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${BERTH_ORACLE_DIR:-${BERTH_CACHE:-/var/cache/berth-test}/docker-oracle}

setup() {
    [[ -x $dir/bin/berthd && -x $dir/root/usr/sbin/dockerd ]] && return
    mkdir -p "$dir/debs" "$dir/root" "$dir/bin"
    (cd "$dir/debs" && apt-get download docker.io containerd tini)
    for deb in "$dir"/debs/*.deb; do dpkg-deb -x "$deb" "$dir/root"; done
    ln -sf "$dir/root/usr/bin/tini-static" "$dir/bin/docker-init"
    cat >"$dir/bin/berthd" <<WRAPPER
#!/usr/bin/env bash
# berthd flags -> dockerd, with a containerd of its own that survives dockerd restarts
# (as berth-shims survive berthd) and a short socket path for it.
set -euo pipefail
export PATH=$dir/bin:$dir/root/usr/bin:$dir/root/usr/sbin:/usr/sbin:/usr/bin:/sbin:/bin
args=()
while [[ \$# -gt 0 ]]; do
    case \$1 in
        -H) args+=(-H "\$2"); shift 2 ;;
        --data-root) root=\$2; args+=(--data-root "\$2"); shift 2 ;;
        --exec-root) run=\$2; args+=(--exec-root "\$2" --pidfile "\$2/dockerd.pid"); shift 2 ;;
        *) args+=("\$1"); shift ;;
    esac
done
state=\$run/oracle-containerd
sock=/tmp/oc-\$(echo "\$run" | md5sum | cut -c1-12)
mkdir -p "\$state" "\$sock"
if ! { [[ -f \$state/pid ]] && kill -0 "\$(cat "\$state/pid")" 2>/dev/null; }; then
    printf 'version = 2\nroot = "%s"\nstate = "%s"\n[grpc]\n  address = "%s"\n' \
        "\$root/oracle-containerd" "\$state/state" "\$sock/containerd.sock" >"\$state/config.toml"
    setsid containerd --config "\$state/config.toml" >>"\$state/log" 2>&1 </dev/null &
    echo \$! >"\$state/pid"
    for _ in \$(seq 100); do [[ -S \$sock/containerd.sock ]] && break; sleep 0.1; done
fi
exec dockerd "\${args[@]}" --containerd "\$sock/containerd.sock" --live-restore \
    --iptables=false --ip-forward=false --ip-masq=false --userland-proxy=false \
    --storage-driver overlay2 --default-ulimit nofile=20000:20000
WRAPPER
    cat >"$dir/bin/berth" <<'WRAPPER'
#!/usr/bin/env bash
# `berth -H HOST --no-autostart ARGS...` -> `docker ARGS...` with DOCKER_HOST=HOST.
set -euo pipefail
export DOCKER_HOST=$2
shift 3
exec docker "$@"
WRAPPER
    chmod +x "$dir/bin/berthd" "$dir/bin/berth"
}

cleanup() {
    local c
    if ! grep -qs dockerd /proc/[0-9]*/comm && ip link show docker0 >/dev/null 2>&1; then
        ip link del docker0
    fi
    for c in /sys/fs/cgroup/*/docker; do
        if [[ -d $c ]]; then rmdir "$c" 2>/dev/null || true; fi
    done
    rm -rf /tmp/oc-*
}

case ${1:-} in
    setup) setup ;;
    run)
        shift
        setup
        status=0
        BERTH_BIN_DIR=$dir/bin BERTH_E2E_START_TIMEOUT=60 \
            cargo nextest run -p berth-e2e -j 1 --no-fail-fast "$@" || status=$?
        cleanup
        exit $status
        ;;
    python)
        setup
        status=0
        (cd tests/python && BERTH_BIN_DIR=$dir/bin PYTHONDONTWRITEBYTECODE=1 python3 -m unittest -v test_docker_py) || status=$?
        cleanup
        exit $status
        ;;
    cleanup) cleanup ;;
    *)
        sed -n '2,16p' "$0" >&2
        exit 2
        ;;
esac
