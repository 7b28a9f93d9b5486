#!/usr/bin/env bash
# The test command: installs what the tests need, builds the workspace and runs every test suite
# (Rust unit/integration tests including the root-only end-to-end tests in tests/e2e, then the
# docker-py tests in tests/python). Run as root on Debian 12: `bash scripts/test.sh`.
# Exits non-zero if any suite fails.
#
# Environment:
#   BERTH_E2E_DEBIAN=1   also run the Debian rootfs test (debootstraps bookworm once, cached)
#   BERTH_CACHE=DIR      fixture cache (default /var/cache/berth-test)
#   SKIP_APT=1           do not touch apt (for machines that already have everything)
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n==> %s\n' "$*"; }
loud() {
    local bar
    bar=$(printf '!%.0s' {1..78})
    printf '\n%s\n!!! %s\n%s\n\n' "$bar" "$*" "$bar" >&2
}

is_root=0
[[ $(id -u) -eq 0 ]] && is_root=1
if [[ $is_root -eq 0 ]]; then
    loud "not running as root: packages are not installed and the end-to-end tests will SKIP"
fi

# --- system packages --------------------------------------------------------------------------
apt_packages=(busybox-static runc python3 python3-docker docker-registry skopeo debootstrap nftables tar ca-certificates)
if [[ $is_root -eq 1 && ${SKIP_APT:-0} != 1 ]] && command -v apt-get >/dev/null 2>&1; then
    missing=()
    for p in "${apt_packages[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    if [[ ${#missing[@]} -gt 0 ]]; then
        say "installing ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y --no-install-recommends "${missing[@]}" ||
            { apt-get update && apt-get install -y --no-install-recommends "${missing[@]}"; }
    fi
fi

# --- python: an interpreter with the docker SDK, and pytest if it can be had --------------------
python=""
for candidate in "$(command -v python3 || true)" /usr/bin/python3; do
    [[ -n $candidate && -x $candidate ]] || continue
    if "$candidate" -c 'import docker' 2>/dev/null; then
        python=$candidate
        break
    fi
done
if [[ -z $python ]] && command -v python3 >/dev/null 2>&1; then
    say "installing the docker SDK for $(command -v python3)"
    if python3 -m pip install --quiet docker; then
        python=$(command -v python3)
    fi
fi
use_pytest=0
if [[ -n $python ]]; then
    if ! "$python" -m pytest --version >/dev/null 2>&1; then
        say "installing pytest for $python"
        "$python" -m pip install --quiet pytest 2>/dev/null ||
            { [[ $is_root -eq 1 && $python == /usr/bin/python3 ]] && apt-get install -y --no-install-recommends python3-pytest; } ||
            true
    fi
    "$python" -m pytest --version >/dev/null 2>&1 && use_pytest=1
fi

# --- the docker CLI is the compatibility oracle ---------------------------------------------------
if ! command -v docker >/dev/null 2>&1; then
    loud "docker CLI not found on PATH: the docker-CLI compatibility tests will be SKIPPED"
fi

# --- build and run --------------------------------------------------------------------------------
if ! command -v cargo >/dev/null 2>&1 && [[ -x $HOME/.cargo/bin/cargo ]]; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi
if ! command -v cargo >/dev/null 2>&1; then
    echo "error: cargo not found; install Rust (see scripts/setup.sh)" >&2
    exit 1
fi

failed=()
say "cargo build --workspace"
# The end-to-end tests drive the binaries in target/debug, so build them all first.
cargo build --workspace --bins

if cargo nextest --version >/dev/null 2>&1; then
    say "cargo nextest run --workspace"
    cargo nextest run --workspace --no-fail-fast \
        --tool-config-file "berth-test:$PWD/scripts/nextest.toml" || failed+=("cargo nextest")
    say "cargo test --workspace --doc"
    cargo test --workspace --doc || failed+=("doc tests")
else
    say "cargo test --workspace"
    cargo test --workspace --no-fail-fast || failed+=("cargo test")
fi

if [[ -z $python ]]; then
    loud "no python3 with the docker SDK: the docker-py tests are SKIPPED"
elif [[ $use_pytest -eq 1 ]]; then
    say "docker-py tests ($python -m pytest)"
    PYTHONDONTWRITEBYTECODE=1 "$python" -m pytest -v -p no:cacheprovider tests/python ||
        failed+=("docker-py tests")
else
    say "docker-py tests ($python -m unittest; pytest is not available)"
    (cd tests/python && PYTHONDONTWRITEBYTECODE=1 "$python" -m unittest -v test_docker_py) ||
        failed+=("docker-py tests")
fi

if [[ ${#failed[@]} -gt 0 ]]; then
    echo "FAILED: ${failed[*]}" >&2
    exit 1
fi
say "all test suites passed"
