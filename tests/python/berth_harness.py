"""A private berthd for the docker-py tests, mirroring the Rust harness (tests/e2e/src/lib.rs).

BerthDaemon.start() creates /tmp/berth-py-XXXXXXXX/{root,run,scratch}, starts
`berthd -H unix://<dir>/berthd.sock --data-root <dir>/root --exec-root <dir>/run` and waits for
/_ping. close() removes the containers through the API, stops the daemon it started (by pid),
kills processes whose pid files live under the run dir and that still point back at the test
directory, unmounts everything below the directory, removes cgroups named after its containers
and deletes the directory.

Binaries come from $BERTH_BIN_DIR, else <repo>/target/debug.
"""

import ctypes
import fcntl
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import zlib

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FULL_ID = re.compile(r"[0-9a-f]{64}")
MNT_DETACH = 2


def bin_dir():
    return os.environ.get("BERTH_BIN_DIR") or os.path.join(REPO, "target", "debug")


def cache_dir():
    for candidate in [os.environ.get("BERTH_CACHE"), "/var/cache/berth-test",
                      os.path.join(tempfile.gettempdir(), "berth-test-cache")]:
        if not candidate:
            continue
        try:
            os.makedirs(candidate, exist_ok=True)
            if os.access(candidate, os.W_OK):
                return candidate
        except OSError:
            pass
    raise RuntimeError("no writable fixture cache directory")


def busybox_rootfs_tar():
    """The rootfs tar from scripts/make-busybox-rootfs.sh, cached by the inputs' checksum."""
    script = os.path.join(REPO, "scripts", "make-busybox-rootfs.sh")
    with open(script, "rb") as f:
        key = zlib.crc32(f.read())
    with open("/usr/bin/busybox", "rb") as f:
        key = zlib.crc32(f.read(), key)
    cache = cache_dir()
    tar = os.path.join(cache, "busybox-rootfs-py-%08x.tar" % key)
    with open(os.path.join(cache, "busybox-rootfs.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not os.path.exists(tar):
            subprocess.run(["bash", script, tar], check=True, timeout=120)
    return tar


def http_get(sock_path, path, timeout=5.0):
    """A one-shot GET over the unix socket; returns (status, body bytes)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(sock_path)
        s.sendall(("GET %s HTTP/1.1\r\nHost: berth\r\nConnection: close\r\n\r\n" % path).encode())
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    finally:
        s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    if b"transfer-encoding: chunked" in head.lower():
        decoded, rest = b"", body
        while rest:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                break
            decoded, rest = decoded + rest[:size], rest[size + 2:]
        body = decoded
    return status, body


def _cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class BerthDaemon:
    """One berthd on a private root. Use start(), then close() (also via `with`)."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="berth-py-", dir="/tmp")
        self.root = os.path.join(self.dir, "root")
        self.exec_root = os.path.join(self.dir, "run")
        self.scratch = os.path.join(self.dir, "scratch")
        self.socket = os.path.join(self.dir, "berthd.sock")
        self.log_path = os.path.join(self.dir, "berthd.log")
        self.host = "unix://" + self.socket
        # Own bridge, nftables table and address pool, so the host's real interfaces and
        # other test daemons are never touched.
        slot = os.getpid() % 250
        self.bridge = "bpy%d" % os.getpid()
        self.address_pool = "base=10.214.%d.0/24,size=28" % slot
        self.proc = None
        self.seen_ids = set()
        for d in (self.root, self.exec_root, self.scratch):
            os.makedirs(d, exist_ok=True)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.close()

    def start(self, timeout=10.0):
        berthd = os.path.join(bin_dir(), "berthd")
        if not os.path.isfile(berthd):
            raise RuntimeError("%s is missing; run `cargo build --workspace`" % berthd)
        env = dict(os.environ)
        env["PATH"] = bin_dir() + os.pathsep + env.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        env.setdefault("RUST_LOG", "info,berth_daemon=debug,berth_runtime=debug")
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [berthd, "-H", self.host, "--data-root", self.root, "--exec-root", self.exec_root,
             "--bridge-name", self.bridge, "--default-address-pool", self.address_pool],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env)
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError("berthd exited with %s during startup:\n%s" % (self.proc.returncode, self.log_tail()))
            try:
                if http_get(self.socket, "/_ping", 2.0)[0] == 200:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("berthd did not answer /_ping within %ss:\n%s" % (timeout, self.log_tail()))
            time.sleep(0.05)

    def log_tail(self, lines=60):
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return ""

    def berth(self, *args, input=None, timeout=120):
        """Runs the berth CLI against this daemon; returns the CompletedProcess."""
        cmd = [os.path.join(bin_dir(), "berth"), "-H", self.host, "--no-autostart", *args]
        return subprocess.run(cmd, input=input, capture_output=True, timeout=timeout)

    def import_busybox(self):
        """Imports the busybox rootfs as busybox:latest with `berth import` unless present."""
        status, _ = http_get(self.socket, "/images/busybox:latest/json")
        if status == 200:
            return
        result = self.berth("import", busybox_rootfs_tar(), "busybox:latest")
        if result.returncode != 0:
            raise RuntimeError("berth import failed (%d): %s" % (result.returncode, result.stderr.decode(errors="replace")))

    def container_ids(self):
        status, body = http_get(self.socket, "/containers/json?all=1", 20.0)
        if status != 200:
            return []
        ids = [c["Id"] for c in json.loads(body)]
        self.seen_ids.update(ids)
        return ids

    def _remove_containers(self):
        for cid in self.container_ids():
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(30)
            try:
                s.connect(self.socket)
                s.sendall(("DELETE /containers/%s?force=1&v=1 HTTP/1.1\r\nHost: berth\r\n"
                           "Connection: close\r\nContent-Length: 0\r\n\r\n" % cid).encode())
                while s.recv(65536):
                    pass
            except OSError:
                pass
            finally:
                s.close()

    def _stop_daemon(self):
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def _ids_under(self, path):
        ids = set()
        for dirpath, dirnames, filenames in os.walk(path):
            for name in dirnames + filenames:
                ids.update(FULL_ID.findall(name))
        return ids

    def _belongs(self, pid, ids):
        text = _cmdline(pid)
        if self.dir + "/" in text or any(i in text for i in ids):
            return True
        try:
            with open("/proc/%d/cgroup" % pid) as f:
                cgroup = f.read()
            return any(i in cgroup for i in ids)
        except OSError:
            return False

    def _leaked(self):
        """Live processes whose command line names a path in our (unique) directory."""
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) in (1, os.getpid()):
                continue
            text = _cmdline(int(entry))
            if self.dir + "/" in text and _alive(int(entry)):
                found.append((int(entry), text))
        return found

    def _kill_recorded(self, ids):
        for dirpath, _, filenames in os.walk(self.dir):
            for name in filenames:
                if not (name == "pid" or name.endswith(".pid") or name.endswith("-pid")):
                    continue
                try:
                    with open(os.path.join(dirpath, name)) as f:
                        pid = int(f.read().strip())
                except (OSError, ValueError):
                    continue
                if pid > 1 and pid != os.getpid() and _alive(pid) and self._belongs(pid, ids):
                    os.kill(pid, signal.SIGKILL)

    @staticmethod
    def _remove_cgroups(ids):
        found = []
        for dirpath, dirnames, _ in os.walk("/sys/fs/cgroup"):
            for name in dirnames:
                if any(i in name for i in ids):
                    found.append(os.path.join(dirpath, name))
        for group in sorted(found, key=lambda p: -p.count("/")):
            try:
                with open(os.path.join(group, "cgroup.procs")) as f:
                    for line in f:
                        os.kill(int(line), signal.SIGKILL)
            except (OSError, ValueError):
                pass
            for _ in range(40):
                try:
                    os.rmdir(group)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.05)

    def _unmount_all(self):
        libc = ctypes.CDLL(None, use_errno=True)
        for _ in range(5):
            mounts = []
            with open("/proc/self/mountinfo") as f:
                for line in f:
                    point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), line.split(" ")[4])
                    if point == self.dir or point.startswith(self.dir + "/"):
                        mounts.append(point)
            if not mounts:
                return True
            for point in sorted(mounts, key=lambda p: -p.count("/")):
                libc.umount2(point.encode(), MNT_DETACH)
        return False

    def close(self):
        if self.proc is not None and self.proc.poll() is None:
            try:
                self._remove_containers()
            except (OSError, ValueError):
                pass
        self._stop_daemon()
        for cmd in (["ip", "link", "delete", self.bridge], ["nft", "delete", "table", "inet", self.bridge]):
            subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ids = self.seen_ids | self._ids_under(self.dir)
        leaked = self._leaked()
        for pid, text in leaked:
            print("berth_harness: LEAK: pid %d still runs from %s: %s" % (pid, self.dir, text))
            ids.update(FULL_ID.findall(text))
        if ids:
            self._remove_cgroups(ids)
        for pid, _ in leaked:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        self._kill_recorded(ids)
        if not self._unmount_all():
            print("berth_harness: NOT deleting %s: mounts remain below it" % self.dir)
            return
        shutil.rmtree(self.dir, ignore_errors=True)
