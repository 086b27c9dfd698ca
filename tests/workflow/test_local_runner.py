"""The local replica runner (runtime.workspace.local) against a stand-in process that keeps the
server's start-up contract (the ready line, the gRPC health service, --auth-keys): start, ports
from the ready line, health, stale-PID detection, process-group stop, atomic 0600 key files.
The real server is exercised by test_deploy.py."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time

import pytest

from accelml.hdl.errors import ServeError
from accelml.runtime.workspace import local

pytest.importorskip("grpc_health.v1")



@pytest.fixture(autouse=True)
def stop_leftovers(tmp_path):
    """Stop every stand-in a failing test left running in its service directories."""
    yield
    for d in tmp_path.iterdir():
        if d.is_dir():
            local.stop(d)


def _child_pid(service_dir):
    for line in (service_dir / local.LOG).read_text().splitlines():
        if line.startswith("child "):
            return int(line.split()[1])
    raise AssertionError("no child line")


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return os.path.exists(f"/proc/{pid}") and open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"


def test_start_ready_health_stop(tmp_path, stand_in):
    program = stand_in
    svc = tmp_path / "svc"
    svc.mkdir()
    local.write_keys(svc / local.KEYS, "p1", "s1")
    assert stat.S_IMODE(os.stat(svc / local.KEYS).st_mode) == 0o600
    pid = local.start(tmp_path / "pkg", "svc1", svc, auth=True, program=program)
    grpc_port, rest_port = local.wait_ready(pid, svc, "svc1", timeout=60)
    assert rest_port == grpc_port + 1 and local.healthy(grpc_port)
    assert local.running(pid, svc) and local.servers_in(svc) == [pid]
    assert not local.running(pid, tmp_path)  # another service directory: not this service's server
    child = _child_pid(svc)
    local.write_keys(svc / local.KEYS, "p2", "s1")
    assert local.read_keys(svc / local.KEYS) == ("p2", "s1")
    assert not [p for p in os.listdir(svc) if p.endswith(".tmp")]
    local.stop(svc)
    time.sleep(0.2)
    assert not local.running(pid, svc) and not _alive(child)  # the whole process group is gone
    assert not local.healthy(grpc_port, timeout=1.0)


def test_stale_pid_and_failed_start(tmp_path, stand_in):
    program = stand_in
    svc = tmp_path / "svc"
    pid = local.start(tmp_path / "pkg", "s", svc, auth=False, program=program)
    local.wait_ready(pid, svc, "s", timeout=60)
    os.killpg(os.getpgid(pid), signal.SIGKILL)
    deadline = time.monotonic() + 10
    while local.running(pid, svc) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not local.running(pid, svc)  # detected as stale
    local.stop(svc)  # nothing to stop: no error
    bad = tmp_path / "bad"
    pid = local.start(tmp_path / "broken", "b", bad, auth=False, program=program)
    with pytest.raises(ServeError, match="exited during start-up: .*cannot load package"):
        local.wait_ready(pid, bad, "b", timeout=60)


def test_running_rejects_unrelated_processes(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"], cwd=tmp_path)
    try:
        assert not local.running(proc.pid, tmp_path)  # right directory, not a server
        assert not local.running(None, tmp_path) and not local.running(2 ** 22 + 12345, tmp_path)
    finally:
        proc.kill()
        proc.wait()
