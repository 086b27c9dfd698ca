"""Devices that execute engine programs on an external-memory image.

The host code is the same for every device: ``execute(program, memory)`` runs a program to its
``halt``, leaves the results in memory and returns its ``Stats`` (also kept in ``last_stats``).
``FuncSimDevice`` (the default, ``"funcsim"``) is the functional simulator; ``RtlDevice``
(``"rtl"``) runs the same program on the Verilated engine (``sim/rtl_engine.EngineSim``); a board
device would move the memory image over a host link.

``RtlDevice`` builds one Verilated engine per (EngineConfig, instruction-memory depth, memory-model
size, waveform or not), in the user cache (``$ACCELML_CACHE_DIR/rtl``), reused across runs and
processes (the engine's Verilog is kept there too, ``rtl_engine.engine_text``, so a later process
neither elaborates nor emits it; a progress line shows while either is made); a program of up to
``IMEM_MIN_DEPTH`` instructions and an image of up to 16 MiB share the default build; ``threads``
(default 1) runs the Verilated engine on that many threads (a build of its own). Before each
new program it runs the cycle model (funcsim without numerics: control flow and addresses only) for
the step count and modelled cycles; the engine then runs with exactly that step budget and a cycle
budget of ``CYCLE_MARGIN`` times the modelled cycles plus ``CYCLE_SLACK`` (``max_cycles`` replaces
both the pre-run and that budget). An engine that stops with an error code raises ``RtlError``
naming the instruction (index and disassembly) and the code.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from accelml.hdl.config import EngineConfig
from accelml.hdl.errors import AccelmlError, DeviceError, RtlError
from accelml.hdl.isa import decode
from accelml.hdl.program import Program
from accelml.sim.funcsim import FuncSim, Stats
from accelml.sim.memory import ExternalMemory

from .storage import claim_output, commit_file, temporary_beside

__all__ = ["Device", "FuncSimDevice", "RtlDevice", "RtlStats", "device_named", "DEVICES", "is_fst", "claim_trace",
           "DEFAULT_MAX_STEPS"]

DEFAULT_MAX_STEPS = 50_000_000  # FuncSim's default step budget


class Device:
    name = "abstract"

    def __init__(self, cfg: EngineConfig):
        self.cfg = cfg
        self.last_stats: Stats | None = None

    def execute(self, program: Program, memory: ExternalMemory) -> Stats:
        raise NotImplementedError


class FuncSimDevice(Device):
    """The functional simulator. A program's first run also runs the cycle model; later runs of
    the same program reuse its timing (which does not depend on the data) and only compute."""

    name = "funcsim"

    def __init__(self, cfg: EngineConfig, *, max_steps: int = DEFAULT_MAX_STEPS):
        super().__init__(cfg)
        self.max_steps = max_steps
        self._timing: dict[int, tuple[Program, int, int, dict]] = {}  # id(program) -> (program, mem, cycles, busy)

    def execute(self, program: Program, memory: ExternalMemory) -> Stats:
        known = self._timing.get(id(program))
        if known is not None and (known[0] is not program or known[1] != memory.size):
            known = None
        sim = FuncSim(self.cfg, memory, timing=known is None)
        stats = sim.run(program, max_steps=self.max_steps)
        if known is None:
            self._timing[id(program)] = (program, memory.size, stats.cycles, dict(stats.busy))
        else:
            stats.cycles, stats.busy = known[2], dict(known[3])
        self.last_stats = stats
        return stats


def is_fst(head: bytes) -> bool:
    """Whether ``head`` (a file's first bytes) opens an FST waveform: a header block (type 0) of the
    format's fixed length, 329 bytes."""
    return len(head) >= 9 and head[0] == 0 and int.from_bytes(head[1:9], "big") == 329


def claim_trace(path: str | os.PathLike, *, inputs=()) -> Path:
    """Refuse (DestinationError) a waveform path that is a directory, an input or an existing file
    other than an FST waveform."""
    return claim_output(Path(path), inputs=inputs, ours=is_fst, what="FST waveform")


@dataclass
class RtlStats(Stats):
    """A run on the Verilated engine: ``cycles``, ``instructions`` and ``busy`` as the RTL counted
    them; ``tile_ops``, ``macs`` and DMA bytes from the cycle model's run of the same program
    (they do not depend on the data); ``modelled_cycles`` the cycle model's figure (0 when the run
    had an explicit cycle budget instead)."""

    modelled_cycles: int = 0
    build_seconds: float = 0.0  # 0 when the Verilated engine came from the cache
    run_seconds: float = 0.0
    imem_depth: int = 0

    def summary(self, cfg: EngineConfig) -> str:
        lines = super().summary(cfg).splitlines()
        modelled = f"; cycle model {self.modelled_cycles}" if self.modelled_cycles else ""
        lines = [ln for ln in lines if not ln.startswith("modelled cycles")]
        lines.insert(4, f"RTL cycles            : {self.cycles} ({self.cycles / cfg.clock_mhz:.1f} us at "
                        f"{cfg.clock_mhz:g} MHz{modelled})")
        busy = ", ".join(f"{k} {v} ({100 * v / self.cycles:.0f} %)" if self.cycles else f"{k} {v}"
                         for k, v in self.busy.items())
        lines.append(f"RTL busy cycles       : {busy}")
        rate = f" = {self.cycles / self.run_seconds:,.0f} cycles/s" if self.run_seconds else ""
        built = f"built in {self.build_seconds:.0f} s" if self.build_seconds else "cached"
        lines.append(f"RTL simulation        : {self.run_seconds:.1f} s{rate} (Verilated engine {built}, "
                     f"imem {self.imem_depth})")
        return "\n".join(lines)


class _Progress:
    """An elapsed-seconds line on a stream while something long runs (a thread; ``\r`` updates on
    a terminal, else one line at the start and one at the end)."""

    def __init__(self, stream, message: str):
        self.stream, self.message = stream, message
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._tick, daemon=True)
        self._tty = hasattr(stream, "isatty") and stream.isatty()
        self.start = 0.0

    def _tick(self) -> None:
        while not self._stop.wait(1.0):
            if self._tty:
                self.stream.write(f"\r{self.message} ... {time.monotonic() - self.start:.0f} s")
                self.stream.flush()

    def __enter__(self):
        self.start = time.monotonic()
        self.stream.write(f"{self.message} ..." + ("" if self._tty else "\n"))
        self.stream.flush()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        end = "\r" if self._tty else ""
        outcome = "failed" if exc[0] is not None else "done"
        self.stream.write(f"{end}{self.message}: {outcome} in {time.monotonic() - self.start:.0f} s\n")
        self.stream.flush()
        return False


class RtlDevice(Device):
    """The Verilated engine (see the module doc). ``max_steps``: the cycle model's step budget (a
    program that does not halt within it is refused before the RTL runs); ``max_cycles``: the RTL's
    cycle budget instead of the one derived from the cycle model; ``trace``: write each run's FST
    waveform there (the first run to ``trace``, the k-th after it to ``<stem>.<k><suffix>``);
    ``progress``: a stream for the progress lines of the build and of each run (None: silent)."""

    name = "rtl"
    # the cycle model equals the RTL's count (tests/hdl/engine); the budget only bounds a hang, with
    # room for a program whose timing no RTL test has covered
    CYCLE_MARGIN = 2
    CYCLE_SLACK = 10_000

    def __init__(self, cfg: EngineConfig, *, max_steps: int = DEFAULT_MAX_STEPS, max_cycles: int | None = None,
                 trace: str | os.PathLike | None = None, progress=None, cache_dir: Path | None = None,
                 threads: int = 1):
        super().__init__(cfg)
        from accelml.sim import rtl
        from accelml.sim.rtl_engine import check_threads

        for name, v in (("max_steps", max_steps), ("max_cycles", max_cycles)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v <= 0):
                raise DeviceError(f"rtl device: {name} must be a positive integer, got {v!r}")
        try:
            check_threads(threads)
        except ValueError as e:
            raise DeviceError(f"rtl device: {e}") from None
        missing = rtl.tools_missing()
        if missing:
            raise DeviceError(f"device 'rtl' is not available here: {missing}")
        if trace is not None:
            missing = rtl.fst_missing()
            if missing:
                raise DeviceError(f"device 'rtl' cannot write FST waveforms here: {missing}")
        try:
            from accelml.hdl.engine.layouts import check_config

            check_config(cfg, "Engine")  # the rest of what the RTL cannot build shows when it elaborates
        except (TypeError, ValueError) as e:
            raise RtlError(f"the RTL cannot build EngineConfig {cfg.name} ({cfg.short_hash}): {e}") from None
        self.max_steps, self.max_cycles = max_steps, max_cycles
        self.threads = threads
        self.trace = Path(trace) if trace is not None else None
        self.progress = progress
        self.cache_dir = cache_dir
        self.runs = 0
        self.build_seconds = 0.0  # Verilator builds this device made (cached ones cost nothing)
        self._sims: dict[tuple, object] = {}
        self._plans: dict[int, tuple] = {}  # id(program) -> (program, memory size, ro bytes, Stats)
        self._lock = threading.Lock()

    def _progress(self, message: str | None):
        """A progress line for ``message`` on the device's stream; nothing without a stream or a
        message."""
        if self.progress is None or message is None:
            return contextlib.nullcontext()
        return _Progress(self.progress, message)

    def _sim(self, imem_depth: int, model_bytes: int):
        from accelml.sim.rtl import RtlBuildError
        from accelml.sim.rtl_engine import EngineSim, engine_text_path

        key = (imem_depth, model_bytes, self.trace is not None)
        with self._lock:
            sim = self._sims.get(key)
            if sim is None:
                def make():
                    return EngineSim(self.cfg, imem_depth=imem_depth, model_bytes=model_bytes,
                                     cache_dir=self.cache_dir, trace=self.trace is not None, threads=self.threads)

                try:
                    cached = engine_text_path(self.cfg, imem_depth, self.cache_dir).is_file()
                    with self._progress(None if cached else f"elaborating and emitting the engine for "
                                        f"{self.cfg.name} (imem {imem_depth}; once, then cached)"):
                        sim = make()
                except (TypeError, ValueError) as e:  # the engine refused the EngineConfig while elaborating
                    raise RtlError(f"the RTL cannot build EngineConfig {self.cfg.name} "
                                   f"({self.cfg.short_hash}): {e}") from None
                self._sims[key] = sim
        built = sim.is_built()
        if not built:
            what = (f"building the Verilated engine for {self.cfg.name} (imem {imem_depth}, memory model "
                    f"{model_bytes >> 20} MiB{', FST trace' if self.trace else ''}; a few minutes, once)")
            try:
                with self._progress(what):
                    sim.build()
                self.build_seconds += sim.build_seconds
            except RtlBuildError as e:  # one line: the first compiler / Verilator error of the log
                lines = str(e).splitlines()
                first = next((ln.strip() for ln in lines[1:] if "error" in ln.lower()), "see the build log")
                raise RtlError(f"{lines[0]}: {first}") from None
        return sim

    def _plan(self, program: Program | list[int], memory: ExternalMemory) -> Stats:
        """The cycle model's run of ``program`` (steps, modelled cycles, MACs, DMA bytes), once per
        program and memory shape."""
        known = self._plans.get(id(program))
        if known is not None and known[0] is program and known[1:3] == (memory.size, memory.frozen):
            return known[3]
        mem = ExternalMemory(self.cfg, memory.size)
        mem.freeze(memory.frozen)
        sim = FuncSim(self.cfg, mem, numerics=False, timing=True)
        try:
            runnable = program if isinstance(program, Program) else [decode(w, i) for i, w in enumerate(program)]
            stats = sim.run(runnable, max_steps=self.max_steps)
        except AccelmlError as e:
            if "instructions executed" in str(e):
                from accelml.hdl.engine.status import ErrorCode

                raise RtlError(f"the program does not halt within {self.max_steps} instructions (cycle model, "
                               f"before the RTL run; raise --max-steps, or give --max-cycles to run the RTL "
                               f"against a cycle budget instead): {e}", code=ErrorCode.STEP_BUDGET) from None
            # the RTL stops at the same place; run it there for its own report
            stats = Stats(instructions=self.max_steps, cycles=sim.model.cycles)
        with self._lock:
            self._plans[id(program)] = (program, memory.size, memory.frozen, stats)
        return stats

    def _trace_path(self) -> Path | None:
        if self.trace is None:
            return None
        with self._lock:
            k, self.runs = self.runs, self.runs + 1
        path = self.trace if k == 0 else self.trace.with_name(f"{self.trace.stem}.{k}{self.trace.suffix}")
        return claim_trace(path)

    def execute(self, program: Program | list[int], memory: ExternalMemory) -> Stats:
        """Run ``program`` (a Program, or raw 64-bit words) on ``memory``'s image and write back what
        it stored; RtlError when the engine stops with an error code."""
        from accelml.hdl.engine.status import ErrorCode
        from accelml.sim.rtl_engine import imem_depth_for, model_bytes_for, stop_message

        words = program.words() if isinstance(program, Program) else list(program)
        depth = imem_depth_for(len(words))
        built_before = self.build_seconds
        sim = self._sim(depth, model_bytes_for(self.cfg, memory.size))
        build_seconds = self.build_seconds - built_before  # 0 unless this run built the engine
        if self.max_cycles is None:
            plan = self._plan(program, memory)
            max_steps, max_cycles = plan.instructions, self.CYCLE_MARGIN * plan.cycles + self.CYCLE_SLACK
        else:
            plan, max_steps, max_cycles = Stats(), self.max_steps, self.max_cycles
        trace = self._trace_path()
        tmp = None if trace is None else temporary_beside(trace)
        expect = (f"{plan.cycles:,} modelled cycles" if self.max_cycles is None
                  else f"at most {max_cycles:,} cycles")
        try:
            with self._progress(f"simulating the engine ({expect})"):
                run = sim.run(words, memory.data, ro_bytes=memory.frozen, max_steps=max_steps,
                              max_cycles=max_cycles, trace_to=tmp)
            if tmp is not None and tmp.exists():
                commit_file(tmp, trace)
        finally:
            if tmp is not None:
                tmp.unlink(missing_ok=True)
        if run.error is not ErrorCode.NONE:
            raise RtlError(f"RTL engine stopped at {stop_message(run.error, run.error_pc, words)}",
                           code=run.error, pc=run.error_pc)
        memory.data[memory.frozen:] = run.memory[memory.frozen:]
        stats = RtlStats(instructions=run.steps, by_opcode=plan.by_opcode, tile_ops=plan.tile_ops, macs=plan.macs,
                         dma_load_bytes=plan.dma_load_bytes, dma_store_bytes=plan.dma_store_bytes, cycles=run.cycles,
                         busy=dict(run.busy), wall_seconds=run.run_seconds, modelled_cycles=plan.cycles,
                         build_seconds=build_seconds, run_seconds=run.run_seconds, imem_depth=depth)
        self.last_stats = stats
        return stats


DEVICES = {"funcsim": FuncSimDevice, "rtl": RtlDevice}


def device_named(name: str, cfg: EngineConfig, **options) -> Device:
    """The device ``name`` for ``cfg``; ``options`` go to its constructor (e.g. ``max_cycles`` for rtl)."""
    try:
        cls = DEVICES[name]
    except KeyError:
        available = ", ".join(DEVICES)
        raise DeviceError(f"device {name!r} is not available here (available: {available})") from None
    return cls(cfg, **options)
