"""A service replica on this machine: ``accelml serve`` as a background process.

    pid = start(package, name, service_dir, auth=True, device="funcsim")   # own process group
    grpc_port, rest_port = wait_ready(pid, service_dir, name, timeout=120)  # + gRPC health SERVING
    running(pid, service_dir)        # False for a stale PID (gone, or reused by another program)
    stop(service_dir)                # every server of the service: SIGTERM to its process group,
                                     # SIGKILL after a grace period

The server prints its ready line (``accelml.runtime.serve.ready``) once it is ready; the ports (0 asks
for free ones) are read from that line in ``server.log``. Keys live in ``keys.json`` (mode 0600),
``{"primary": ..., "secondary": ...}``, written to a temporary file and renamed, which the server
re-reads when the file changes.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

from accelml.hdl.errors import ServeError
from accelml.runtime.serve.ready import parse_ready_line
from accelml.runtime.storage import commit_file, temporary_beside

LOG = "server.log"
KEYS = "keys.json"
HOST = "127.0.0.1"

__all__ = ["server_available", "process_alive", "start", "wait_ready", "running", "servers_in", "stop", "healthy",
           "write_keys", "read_keys", "new_key"]


def server_available() -> bool:
    """Whether this installation has the server: the ``serve`` command and the scoring client."""
    import argparse
    import importlib.util

    if importlib.util.find_spec("accelml.runtime.client") is None:
        return False
    from accelml.runtime.cli import build_parser

    subs = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return any("serve" in a.choices for a in subs)


def new_key() -> str:
    return secrets.token_urlsafe(32)


def write_keys(path: Path, primary: str, secondary: str) -> None:
    """The keys file, readable by its owner only, put in place whole (``storage.commit_file``)."""
    tmp = temporary_beside(path)
    try:
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
            json.dump({"primary": primary, "secondary": secondary}, f)
        commit_file(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # gone already once committed


def read_keys(path: Path) -> tuple[str, str]:
    try:
        data = json.loads(path.read_text())
        return data["primary"], data["secondary"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ServeError(f"{path}: cannot read the service keys ({e})") from None


def start(package: Path, name: str, service_dir: Path, *, auth: bool, device: str = "funcsim",
          program: list[str] | None = None) -> int:
    """Start the server in ``service_dir`` (its own session and process group); returns its PID.
    ``program``: the command before ``serve`` (default ``python -m accelml.runtime.cli``)."""
    service_dir.mkdir(parents=True, exist_ok=True)
    cmd = [*(program or [sys.executable, "-m", "accelml.runtime.cli"]), "serve", str(package), "--name", name,
           "--grpc-port", "0", "--rest-port", "0", "--host", HOST, "--device", device]
    if auth:
        cmd += ["--auth-keys", str(service_dir / KEYS)]
    with open(service_dir / LOG, "ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, cwd=service_dir)
    deadline = time.monotonic() + 30.0  # until the child has exec'd: before that /proc shows our command line
    while proc.poll() is None and " serve " not in _cmdline(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.005)
    return proc.pid


def process_alive(pid: int | None) -> bool:
    """Whether a process ``pid`` exists (and is not a zombie)."""
    if not pid:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def running(pid: int | None, service_dir: Path) -> bool:
    """Whether ``pid`` is still this service's server (not gone, not a zombie, not reused: the
    server runs in the service directory)."""
    if not process_alive(pid):
        return False
    try:
        cwd = os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return False
    return " serve " in _cmdline(pid) and cwd == str(service_dir.absolute())


def healthy(port: int, timeout: float = 5.0) -> bool:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(f"{HOST}:{port}") as ch:
        try:
            resp = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=timeout)
        except grpc.RpcError:
            return False
    return resp.status == health_pb2.HealthCheckResponse.SERVING


def _tail(path: Path, n: int = 5) -> str:
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return " | ".join(lines[-n:]) or "(empty log)"


def wait_ready(pid: int, service_dir: Path, name: str, timeout: float = 300.0) -> tuple[int, int]:
    """Wait for the ready line and a SERVING health check; ServeError (with the log's tail) if the
    server exits or does not become ready in ``timeout`` seconds."""
    log = service_dir / LOG
    deadline = time.monotonic() + timeout
    ports = None
    while time.monotonic() < deadline:
        if not running(pid, service_dir):
            raise ServeError(f"service {name!r}: the server exited during start-up: {_tail(log)}")
        if ports is None:
            text = log.read_text(errors="replace") if log.exists() else ""
            ports = parse_ready_line(text, name)
        if ports is not None and healthy(ports[0], timeout=2.0):
            return ports
        time.sleep(0.1)
    raise ServeError(f"service {name!r}: not ready after {timeout:g} s: {_tail(log)}")


def servers_in(service_dir: Path) -> list[int]:
    """Every live server process running in ``service_dir`` (found in /proc, so a server whose
    PID was never recorded, because its deployer was killed, is found too)."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and running(int(entry.name), service_dir):
            out.append(int(entry.name))
    return out


def stop(service_dir: Path, grace: float = 10.0) -> None:
    """Stop every server process of the service (SIGTERM to its process group, then SIGKILL)."""
    groups = set()
    for pid in servers_in(service_dir):
        try:
            groups.add(os.getpgid(pid))
        except ProcessLookupError:
            pass
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pgid in groups:
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and servers_in(service_dir):
            time.sleep(0.05)
        if not servers_in(service_dir):
            return
