"""A writer killed with SIGKILL at a random point (seeded) in the middle of register or convert
leaves a workspace that opens, lists everything committed before, and loses nothing: every
listed model's stored tree is complete, and the killed writer's temporaries are cleaned."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from accelml.core import Model, Workspace
from accelml.runtime.workspace.store import TMP_PREFIX

REGISTER = textwrap.dedent("""
    import sys
    from accelml.core import Workspace
    from accelml.core.model import Model
    ws = Workspace.open(sys.argv[1])
    print("ready", flush=True)
    for i in range(1000):
        Model.register(ws, sys.argv[2], "busy", tags={"i": str(i)})
""")

CONVERT = textwrap.dedent("""
    import sys
    from accelml.accel import AccelOnnxConverter
    from accelml.core import Workspace
    from accelml.core.model import Model
    ws = Workspace.open(sys.argv[1])
    src = Model(ws, name="resnet50")
    print("ready", flush=True)
    AccelOnnxConverter.convert_tf_model(ws, src, sys.argv[2], sys.argv[3]).wait_for_completion(show_output=True)
    print("done", flush=True)
""")


def kill_after(script: str, args: list[str], delay: float, marker: str | None = None) -> int:
    """Run ``script``; SIGKILL it ``delay`` seconds after it printed "ready" (or after a line of
    its progress output containing ``marker``)."""
    proc = subprocess.Popen([sys.executable, "-c", script, *args], stdout=subprocess.PIPE, text=True,
                            stderr=subprocess.STDOUT, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    for line in proc.stdout:
        if (marker or "ready") in line:
            break
    else:
        raise AssertionError(f"the writer ended without printing {marker or 'ready'!r}")
    time.sleep(delay)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return proc.pid


def check_consistent(path, before: list[str], dead_pid: int) -> list[Model]:
    ws = Workspace.open(path)  # opens: the database is intact
    models = Model.list(ws)
    ids = [m.id for m in models]
    assert set(before) <= set(ids)
    for m in models:  # nothing listed is partial
        ws.registry.store.verify(m.blob)
    assert not [p for p in (path / "blobs").iterdir() if p.name.startswith(f"{TMP_PREFIX}{dead_pid}-")]
    return models


@pytest.fixture
def tree(tmp_path):
    src = tmp_path / "tree"
    src.mkdir()
    rng = np.random.default_rng(0)
    for i in range(40):
        (src / f"part{i:02d}.bin").write_bytes(rng.bytes(50_000))
    return src


@pytest.mark.parametrize("seed", range(4))
def test_kill_during_register(tmp_path, tree, seed):
    ws = Workspace.create("ws", path=tmp_path / "ws")
    keep = Model.register(ws, tree, "keep", tags={"before": "yes"})
    delay = float(np.random.default_rng(seed).uniform(0.0, 1.0))
    pid = kill_after(REGISTER, [str(ws.path), str(tree)], delay)
    models = check_consistent(ws.path, [keep.id], pid)
    busy = [m for m in models if m.name == "busy"]
    assert [m.version for m in busy] == list(range(1, len(busy) + 1))  # committed versions, in order
    # the workspace keeps working: the next version follows the last committed one
    assert Model.register(Workspace.open(ws.path), tree, "busy").version == len(busy) + 1


@pytest.mark.parametrize("seed, marker, span", [(0, None, 2.0), (1, "writing the package", 0.3),
                                                (2, "writing the package", 0.3)],
                         ids=["converting", "storing-1", "storing-2"])
def test_kill_during_convert(tmp_path, saved_model, seed, marker, span):
    """Killed while converting, or while the package is written, stored and registered (that
    phase takes about a tenth of a second here, so kills within 0.3 s of its start fall on both
    sides of the commit: one of these seeds before it, one after it, when measured)."""
    path, inp, out = saved_model
    ws = Workspace.create("ws", path=tmp_path / "ws")
    src = Model.register(ws, path, "resnet50")
    delay = float(np.random.default_rng(100 + seed).uniform(0.0, span))
    pid = kill_after(CONVERT, [str(ws.path), inp, out], delay, marker)
    models = check_consistent(ws.path, [src.id], pid)
    converted = [m for m in models if m.kind == "accel"]
    if converted:  # the kill came after the commit: the package is complete and loads
        from accelml.runtime import load

        assert load(converted[0].path).outputs[0]["name"] == out
