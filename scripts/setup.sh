#!/usr/bin/env bash
# Quick start on a fresh Debian 12 machine, as root: installs the build dependencies, builds
# berth, installs berth, berthd and berth-shim to /usr/local/bin, starts berthd in the background,
# imports a busybox image and runs a first container. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '==> %s\n' "$*"; }
# Talk to the default local daemon, whatever the caller's environment points at.
unset DOCKER_HOST
berth() { /usr/local/bin/berth --no-autostart "$@"; }

if [[ $(id -u) -ne 0 ]]; then
    echo "error: run scripts/setup.sh as root (berthd manages mounts, namespaces and cgroups)" >&2
    exit 1
fi

packages=(build-essential pkg-config libseccomp-dev busybox-static runc curl ca-certificates tar)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [[ ${#missing[@]} -gt 0 ]]; then
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y --no-install-recommends "${missing[@]}"
fi

# Rust: Debian 12 packages rustc 1.63, far older than this workspace needs.
if ! command -v cargo >/dev/null 2>&1 && [[ -x $HOME/.cargo/bin/cargo ]]; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi
need_rust=$(sed -n 's/^rust-version *= *"\([0-9.]*\)".*/\1/p' Cargo.toml | head -n 1)
if ! command -v cargo >/dev/null 2>&1; then
    cat >&2 <<MSG
error: cargo not found. berth needs Rust ${need_rust:-stable} or newer; Debian 12's packaged rustc (1.63)
is too old. Install the toolchain with rustup, then run this script again:
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y
    . "\$HOME/.cargo/env"
MSG
    exit 1
fi
have_rust=$(rustc --version | awk '{print $2}')
if [[ -n $need_rust ]] && [[ $(printf '%s\n%s\n' "$need_rust" "$have_rust" | sort -V | head -n 1) != "$need_rust" ]]; then
    echo "error: rustc $have_rust is older than the required $need_rust; run: rustup update stable" >&2
    exit 1
fi

say "building berth (cargo build --release)"
cargo build --release

for bin in berth berthd berth-shim; do
    # Replace by rename so a running berthd or shim keeps its old executable.
    install -m 0755 "target/release/$bin" "/usr/local/bin/.$bin.new"
    mv -f "/usr/local/bin/.$bin.new" "/usr/local/bin/$bin"
done
say "installed berth, berthd and berth-shim to /usr/local/bin"

pid_file=/run/berth/berthd.pid
log_file=/var/lib/berth/berthd.log
mkdir -p /run/berth /var/lib/berth
running_pid=""
if [[ -s $pid_file ]]; then
    pid=$(cat "$pid_file")
    if [[ -d /proc/$pid ]] && [[ $(readlink "/proc/$pid/exe" 2>/dev/null) == */berthd* ]]; then
        running_pid=$pid
    else
        rm -f "$pid_file"
    fi
fi
if [[ -n $running_pid ]]; then
    say "berthd is already running (pid $running_pid)"
else
    say "starting berthd (log: $log_file)"
    setsid /usr/local/bin/berthd >>"$log_file" 2>&1 </dev/null &
    started=$!
    for _ in $(seq 100); do
        berth version >/dev/null 2>&1 && break
        if ! kill -0 "$started" 2>/dev/null; then
            echo "error: berthd exited; last lines of $log_file:" >&2
            tail -n 30 "$log_file" >&2
            exit 1
        fi
        sleep 0.1
    done
    if ! berth version >/dev/null 2>&1; then
        echo "error: berthd did not answer within 10 s; see $log_file" >&2
        exit 1
    fi
    # berthd may write its own pid file; record ours only if it did not.
    [[ -s $pid_file ]] || echo "$started" >"$pid_file"
fi

if ! berth image inspect busybox:latest >/dev/null 2>&1; then
    cache=${BERTH_CACHE:-/var/cache/berth-test}
    mkdir -p "$cache"
    say "importing busybox:latest from Debian's busybox-static"
    bash scripts/make-busybox-rootfs.sh "$cache/busybox-rootfs.tar"
    berth import --change 'CMD ["sh"]' "$cache/busybox-rootfs.tar" busybox:latest >/dev/null
fi

say 'berth build -t hello-berth (a two-step Dockerfile on busybox)'
hello_ctx=$(mktemp -d)
trap 'rm -rf "$hello_ctx"' EXIT
cat >"$hello_ctx/Dockerfile" <<'DOCKERFILE'
FROM busybox
COPY greeting.txt /greeting.txt
RUN echo "built by berth on $(uname -m)" >> /greeting.txt
CMD ["cat", "/greeting.txt"]
DOCKERFILE
echo "hello from berth" >"$hello_ctx/greeting.txt"
berth build -q -t hello-berth "$hello_ctx" >/dev/null

say 'berth run --rm hello-berth'
berth run --rm hello-berth

cat <<'NEXT'

berth is ready. Next steps:
  berth build -t myimage .                             # build a Dockerfile
  berth run -d --name web busybox httpd -f -p 8080     # a detached container
  berth ps                                             # list running containers
  berth logs -f web                                    # follow its output
  berth rm -f web                                      # remove it
  DOCKER_HOST=unix:///run/berth/berth.sock docker ps   # any Docker client works too (see README)
  bash scripts/test.sh                                 # run the test suites
NEXT
