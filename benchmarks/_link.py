"""What the benchmarks that cross a shaped link share: two network namespaces joined by one
veth pair (``tc tbf`` on both ends), OpenSSH's sshd in the peer's namespace, the optional
delaying forwarder in front of it (benchmarks/_delay.py), the command lines of the tools
compared, and the measurement of one run (wall time, veth counters, CPU of the children).

The master's namespace has 10.250.0.1, the peer's 10.250.0.2; names carry this process's id,
so two benchmarks can run at once. Everything is removed on exit, also on Ctrl-C and SIGTERM
(``terminate_on_sigterm``).
"""

from __future__ import annotations

import json
import os
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path

from deltastage.hashing import hash_file
from deltastage.manifest import MANIFEST_NAME

REPO = Path(__file__).resolve().parent.parent
MASTER_IP, PEER_IP = "10.250.0.1", "10.250.0.2"
TOOLS = ("ip", "tc", "ssh", "scp", "ssh-keygen", "rsync")
SSHD = "/usr/sbin/sshd"
DELAY_PORT = 2222  # the delaying forwarder, in the master's namespace (--delay-ms)


def digests(root: Path) -> dict[str, bytes]:
    """xxh3-128 of every payload file (indicators and deltastage's own files excluded)."""
    out: dict[str, bytes] = {}
    for path in root.rglob("*"):
        rel = path.relative_to(root).as_posix()
        ours = path.name == MANIFEST_NAME or rel.startswith(".deltastage-")
        if path.is_file() and not path.name.startswith("cback.") and not ours:
            out[rel] = hash_file(path)[1]
    return out


# --- namespaces, shaping, sshd ----------------------------------------------------------


def sh(*cmd: str, check: bool = True, capture: bool = False) -> str:
    proc = subprocess.run(list(cmd), check=False, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {shlex.join(cmd)}\n{proc.stderr.strip()}")
    return proc.stdout if capture else ""


@dataclass
class Link:
    master_ns: str
    peer_ns: str
    master_if: str
    peer_if: str

    def in_master(self, *cmd: str) -> list[str]:
        return ["ip", "netns", "exec", self.master_ns, *cmd]

    def counters(self) -> tuple[int, int]:
        """(rx, tx) bytes of the master's veth: rx is peer->master, tx master->peer."""
        stats = f"/sys/class/net/{self.master_if}/statistics"
        out = sh(*self.in_master("cat", f"{stats}/rx_bytes", f"{stats}/tx_bytes"), capture=True)
        rx, tx = (int(v) for v in out.split())
        return rx, tx

    def shape(self, rate: str, burst: str, latency: str) -> None:
        for ns, dev in ((self.master_ns, self.master_if), (self.peer_ns, self.peer_if)):
            sh("tc", "-n", ns, "qdisc", "replace", "dev", dev, "root", "tbf",
               "rate", rate, "burst", burst, "latency", latency)  # fmt: skip

    def unshape(self) -> None:
        for ns, dev in ((self.master_ns, self.master_if), (self.peer_ns, self.peer_if)):
            # fails harmlessly when the link is not shaped
            sh("tc", "-n", ns, "qdisc", "del", "dev", dev, "root", check=False)


@contextmanager
def namespaces() -> Iterator[Link]:
    tag = str(os.getpid())
    link = Link(f"dswan{tag}m", f"dswan{tag}p", f"dsw{tag}m", f"dsw{tag}p")
    try:
        sh("ip", "netns", "add", link.master_ns)
        sh("ip", "netns", "add", link.peer_ns)
        sh("ip", "link", "add", link.master_if, "type", "veth", "peer", "name", link.peer_if)
        for ns, dev, addr in (
            (link.master_ns, link.master_if, MASTER_IP),
            (link.peer_ns, link.peer_if, PEER_IP),
        ):
            sh("ip", "link", "set", dev, "netns", ns)
            sh("ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
            sh("ip", "-n", ns, "link", "set", dev, "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        yield link
    finally:
        # Deleting a namespace destroys the veth end inside it (and so the pair).
        for ns in (link.master_ns, link.peer_ns):
            sh("ip", "netns", "del", ns, check=False)


SSHD_CONFIG = """\
ListenAddress {ip}
Port 22
HostKey {host_key}
PidFile {work}/sshd.pid
AuthorizedKeysFile {work}/authorized_keys
StrictModes no
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
UseDNS no
X11Forwarding no
PrintMotd no
SetEnv PYTHONPATH={repo}
Subsystem sftp internal-sftp
"""


@dataclass
class Keys:
    client: Path
    known_hosts: Path
    host: str = PEER_IP  # where ssh connects: sshd itself, or the delaying forwarder
    port: int = 22

    def ssh_options(self) -> list[str]:
        return ["-F", "/dev/null", "-i", str(self.client), "-o", "BatchMode=yes",
                "-o", f"UserKnownHostsFile={self.known_hosts}", "-o", "StrictHostKeyChecking=yes",
                "-o", "ConnectTimeout=10"]  # fmt: skip


def keygen(path: Path) -> Path:
    sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "deltastage-wan", "-f", str(path))
    return path


@contextmanager
def peer_sshd(link: Link, work: Path) -> Iterator[Keys]:
    work.mkdir(parents=True, exist_ok=True)
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    host_key, client = keygen(work / "host_ed25519"), keygen(work / "client_ed25519")
    (work / "authorized_keys").write_text(Path(f"{client}.pub").read_text())
    host_pub = " ".join(Path(f"{host_key}.pub").read_text().split()[:2])
    keys = Keys(client, work / "known_hosts")
    keys.known_hosts.write_text(f"{PEER_IP} {host_pub}\n[127.0.0.1]:{DELAY_PORT} {host_pub}\n")
    config = work / "sshd_config"
    config.write_text(SSHD_CONFIG.format(ip=PEER_IP, host_key=host_key, work=work, repo=REPO))
    log = (work / "sshd.log").open("ab")
    proc = subprocess.Popen(
        ["ip", "netns", "exec", link.peer_ns, SSHD, "-D", "-e", "-f", str(config)],
        stdin=subprocess.DEVNULL, stdout=log, stderr=log,
    )  # fmt: skip
    try:
        probe = link.in_master("ssh", *keys.ssh_options(), f"root@{PEER_IP}", "true")
        for _ in range(50):
            if proc.poll() is not None:
                raise SystemExit(f"sshd exited: {(work / 'sshd.log').read_text()[-500:]}")
            if subprocess.run(probe, capture_output=True, check=False).returncode == 0:
                break
            time.sleep(0.2)
        else:
            raise SystemExit("sshd in the peer namespace never answered")
        yield keys
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@contextmanager
def delayed(link: Link, keys: Keys, delay_ms: float) -> Iterator[Keys]:
    """``keys`` for connecting through a forwarder that delays each direction by
    ``delay_ms`` (see benchmarks/_delay.py); ``keys`` unchanged for 0."""
    if delay_ms <= 0:
        yield keys
        return
    cmd = link.in_master(sys.executable, "-m", "benchmarks._delay", str(DELAY_PORT), PEER_IP,
                         "22", str(delay_ms))  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "listening":
            raise SystemExit("the delaying forwarder did not start")
        yield replace(keys, host="127.0.0.1", port=DELAY_PORT)
    finally:
        proc.terminate()
        proc.wait()


# --- one measured run -------------------------------------------------------------------


@dataclass
class Run:
    seconds: float
    rx_bytes: int  # peer -> master, from the master's veth (0 without a link)
    tx_bytes: int  # master -> peer
    cpu: float  # user + system seconds of the command and the children it waited for
    stdout: str


def measured_run(link: Link | None, cmd: list[str], what: str) -> Run:
    """Run ``cmd`` in the master's namespace (here without a link) and measure it."""
    # The files just written are still being flushed: every run starts with the disk
    # idle, not paying for the setup's writeback.
    os.sync()
    rx0, tx0 = link.counters() if link else (0, 0)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    full = link.in_master(*cmd) if link else cmd
    proc = subprocess.run(full, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    rx1, tx1 = link.counters() if link else (0, 0)
    if proc.returncode != 0:
        raise SystemExit(f"{what} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Run(seconds, rx1 - rx0, tx1 - tx0, cpu, proc.stdout)


# --- the tools' command lines -----------------------------------------------------------


def stage_config(
    work: Path,
    collect: Path,
    keys: Keys | None,
    *,
    peer: str = "wanpeer",
    agent_command: Sequence[str] = (sys.executable, "-m", "deltastage", "agent"),
) -> Path:
    """``work/deltastage.toml`` staging ``collect`` into ``work/staging`` as ``peer``: a
    remote peer reached with ``keys``, or a local one without."""
    if keys is None:
        where = 'type = "local"\n'
    else:
        where = f"""\
type = "remote"
host = "{keys.host}"
port = {keys.port}
user = "root"
identity_file = {json.dumps(str(keys.client))}
known_hosts = {json.dumps(str(keys.known_hosts))}
agent_command = {json.dumps(shlex.join(agent_command))}
connect_timeout = 30.0
idle_timeout = 600.0
"""
    text = f"""\
[options]
retries = 0

[stage]
staging_dir = {json.dumps(str(work / "staging"))}

[[peers]]
name = "{peer}"
{where}collect_dir = {json.dumps(str(collect))}
"""
    path = work / "deltastage.toml"
    path.write_text(text)
    return path


def deltastage_cmd(config: Path, day: date) -> list[str]:
    return ["env", f"PYTHONPATH={REPO}", sys.executable, "-m", "deltastage", "stage",
            "--config", str(config), "--date", day.isoformat(), "--json"]  # fmt: skip


def rsync_cmd(keys: Keys | None, collect: Path, dest: Path, *extra: str) -> list[str]:
    """rsync as the benchmarks run it: over ssh with ``keys``, else a local copy (which
    still runs a sender and a receiver, and still compresses with -z)."""
    cmd = ["rsync", "-a", "-z", "--no-whole-file", "--delete", *extra]
    if keys is None:
        return [*cmd, f"{collect}/", f"{dest}/"]
    ssh = shlex.join(["ssh", *keys.ssh_options(), "-p", str(keys.port), "-o", "Compression=no"])
    return [*cmd, "-e", ssh, f"root@{keys.host}:{collect}/", f"{dest}/"]


def scp_cmd(keys: Keys, collect: Path, dest: Path) -> list[str]:
    return ["scp", "-B", "-q", "-C", "-r", *keys.ssh_options(), "-P", str(keys.port),
            f"root@{keys.host}:{collect}", str(dest)]  # fmt: skip


# --- reporting, environment -------------------------------------------------------------


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    raise AssertionError("unreachable")


def check_environment() -> str | None:
    """Why the namespaces cannot be made here, or None."""
    if sys.platform != "linux":
        return "needs Linux network namespaces"
    if os.geteuid() != 0:
        return "needs root (ip netns, tc)"
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if not os.access(SSHD, os.X_OK):
        missing.append(SSHD)
    return f"missing tools: {', '.join(missing)}" if missing else None


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally blocks that clean up


def terminate_on_sigterm() -> None:
    """SIGTERM cleans up as Ctrl-C does: namespaces, daemons and work dirs are removed."""
    signal.signal(signal.SIGTERM, _terminate)
