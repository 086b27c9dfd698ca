"""EngineConfig: the single source of every hardware parameter.

The compiler, the golden numerics, the functional simulator, the RTL, bitstream names and packages
all derive their sizes from one frozen, validated ``EngineConfig``. Presets:

========  =====  ====  ===========  ============================================================
preset    N      T     MACs/cycle   what it is for
========  =====  ====  ===========  ============================================================
tiny      4      2     32           unit tests; small enough for quick RTL simulation
ecp5      4      1     16           LFE5U-85F on an OrangeCrab 85F (128 MiB DDR3L), 50 MHz
a10       16     12    3,072        Arria 10 GX 1150: 300 MHz, one DDR4 channel (19.2 GB/s)
s10       16     32    8,192        Stratix 10 GX 2800: 250 MHz, HBM2-class memory (256 GB/s)
wide      4      1     16           23-bit mantissas, for ONNX conformance at rtol 1e-3
========  =====  ====  ===========  ============================================================

N (``native_dim``) is both the length of the engine's dot products and the BFP block size. The
ecp5, a10 and s10 engines fit their devices (whole engine: tile engines, MFU, pool, control,
register files) by the resource model of ``bitstreams/resources.py``, calibrated on whole-engine
synthesis; its table, with margins and modelled ResNet-50 latencies, is in bitstreams/README.md.
ecp5 is the largest engine that fits with its MRF scaled per tile engine (with the VRF read through
one port and the MRF kept, two tile engines fit by synthesis, not adopted yet); a10 and s10 are the
fastest on ResNet-50 of the tile counts measured (more tile engines fit, but the banked MRF's
chunks are multiples or divisors of T, and 12 and 32 cut ResNet-50's power-of-two output blocks
better than 14 or 40: bitstreams/README.md, "The buildable a10 and s10"). The ecp5 engine's own
synthesis fits its LFE5U-85F (52k of 84k LUT4 with carries, 119 of 156 multipliers, 144 of 208
block RAMs); at N = 8 it did not.

Every preset's register files are built as the resource model counts them, from RAM blocks of one
write port:

``file_ports``: ``"shared"`` register-file ports (one write port per file; beside the MVU's, one
read port for the other units), which RAM blocks can hold and whole-engine synthesis measures;
units that would use one such port take turns. ``"unit"``, a port set per unit, is for studies
(bitstreams/banking.py): such files are flip-flops. Either way the MVU reads an accumulating
``mvc``'s sums through the MFU's FVRF read port (``hdl/engine/layouts.py``, ``SHARED_READS``).

``file_parts``: the VRF and the FVRF each built as that many memories (a power of two; entry e in
part e // (depth / file_parts)), each with its own shared ports, so that units take turns only while
they touch a common part. ``a10`` and ``s10`` are in two parts.

``vrf_reads``: the MVU's VRF read ports (0: one per tile engine). With fewer than T, a step's
distinct VRF entries are read that many a cycle and handed to the tile engines that read them
(several engines of a round often read one pixel's block), so the VRF is built as that many copies
for the MVU; a step reading more entries takes more cycles (a depthwise convolution's lanes read
distinct blocks). ``a10`` reads 4, ``s10`` 8. T reads are the same engine as 0 (the same hash).

``mrf_banked``: the MRF as T banks, tile engine t reading bank t only (docs/isa.md, "Banked MRF"),
built in the functional simulator, the compiler and the RTL; ``a10`` and ``s10`` are banked.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field

from .errors import ConfigError

__all__ = ["BfpFormat", "EngineConfig", "FORMATS", "PRESETS", "preset", "format_named"]


@dataclass(frozen=True)
class BfpFormat:
    """A named block-floating-point format: a block of ``block`` elements shares one exponent.

    Each element is a sign and an unsigned ``mantissa_bits``-bit magnitude (no hidden bit). The
    shared exponent field is ``exponent_bits`` wide. ``block=None`` means "the engine's native
    dimension". See docs/numerics.md for the exact semantics.
    """

    name: str
    mantissa_bits: int
    exponent_bits: int
    block: int | None
    description: str = ""


FORMATS: dict[str, BfpFormat] = {
    f.name: f
    for f in (
        BfpFormat("ms-fp9", 3, 5, None, "ms-fp9-like: 5-bit shared exponent, sign + 3-bit mantissa"),
        BfpFormat("msfp12", 3, 8, 16, "msfp12-like: 8-bit shared exponent, block 16, sign + 3 bits"),
        BfpFormat("msfp16", 7, 8, 16, "msfp16-like: 8-bit shared exponent, block 16, sign + 7 bits"),
        BfpFormat("mxint8", 7, 8, 32, "mxint8-like: E8M0 scale, block 32, sign + 7-bit magnitude"),
    )
}


def format_named(name: str) -> BfpFormat:
    try:
        return FORMATS[name]
    except KeyError:
        raise ConfigError(
            f"unknown format {name!r}; known formats: {', '.join(sorted(FORMATS))}"
        ) from None


def _check_int(name: str, value, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"EngineConfig.{name} must be an integer, got {value!r}")
    if not lo <= value <= hi:
        raise ConfigError(f"EngineConfig.{name} must be in [{lo}, {hi}], got {value}")


def _check_pos_float(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"EngineConfig.{name} must be a positive finite number, got {value!r}")


INTERNAL_FORMATS = ("fp32-ftz",)
FILE_PORTS = ("unit", "shared")
# fields added after packages were first written, hashed only away from the value every earlier
# configuration had, so the hash of an earlier configuration stays what its packages recorded
_HASHED_IF_NOT = {"file_ports": "unit", "mrf_banked": False, "file_parts": 1, "vrf_reads": 0}
PARTED_FILES = ("vrf", "fvrf")  # the files file_parts splits (the MRF's ports are no unit's to share)


@dataclass(frozen=True)
class EngineConfig:
    """Every hardware parameter of one engine build. Frozen and validated on construction."""

    native_dim: int  # N: dot-product length = BFP block size = lanes per dot-product engine
    tiles: int  # T: tile engines, each N dot-product engines x N lanes
    mantissa_bits: int  # M: magnitude bits per BFP element (sign is separate)
    exponent_bits: int  # E: shared exponent field width
    format: str = "custom"  # name of the BFP format (a FORMATS key or "custom")
    internal_format: str = "fp32-ftz"  # MFU / accumulator format, see docs/numerics.md
    mrf_tiles: int = 256  # matrix register file depth, in N x N weight tiles
    vrf_vectors: int = 4096  # BFP vector register file depth, in N-vectors
    fvrf_vectors: int = 4096  # internal-format vector file depth, in N-vectors
    mfu_width: int = 1  # N-vectors each multi-function unit op processes per cycle
    # register-file ports (FILE_PORTS): "unit", every unit its own write and read ports on each
    # file; "shared", one write port per file and, beside the MVU's T reads, one read port shared
    # by the other readers (hdl/engine/regfiles.py), as FPGA RAM blocks are built
    file_ports: str = "unit"
    # the MRF as T banks, entry e in bank e mod T: tile engine t reads only bank t, which needs
    # mvc chunks of a multiple or a divisor of T output blocks (docs/isa.md, "Banked MRF")
    mrf_banked: bool = False
    # the VRF and the FVRF each as this many memories of 1 / file_parts of the depth (entry e in part
    # e // (depth / file_parts)), each part with its own shared ports: units take turns on a shared
    # port only while their spans touch a common part (hdl/engine/regfiles.py, layouts.port_conflict)
    file_parts: int = 1
    # the MVU's VRF read ports, V (0: one per tile engine, T): a step's distinct VRF entries are read
    # V a cycle (a step of U entries takes ceil(U / V) cycles) and handed to the tile engines that
    # read them, so the VRF is V copies for the MVU rather than T (hdl/engine/mvu.py)
    vrf_reads: int = 0
    mem_bytes: int = 64 << 20  # external memory size
    mem_port_bits: int = 64  # external memory port width, bits per engine clock
    mem_bandwidth_gbps: float = 1.6  # sustained external memory bandwidth, GB/s
    mem_latency_cycles: int = 8  # external memory read latency, engine cycles
    clock_mhz: float = 100.0  # engine clock used for modelled figures
    name: str = field(default="custom", compare=False)

    def __post_init__(self):
        n = self.native_dim
        _check_int("native_dim", n, 2, 256)
        if n & (n - 1):
            raise ConfigError(f"EngineConfig.native_dim must be a power of two, got {n}")
        _check_int("tiles", self.tiles, 1, 4096)
        _check_int("mantissa_bits", self.mantissa_bits, 1, 24)
        _check_int("exponent_bits", self.exponent_bits, 2, 8)
        if 2 * self.mantissa_bits + int(math.log2(n)) > 53:
            raise ConfigError(
                f"EngineConfig.mantissa_bits={self.mantissa_bits} with native_dim={n}: block dot "
                "products would exceed 53 bits"
            )
        if self.internal_format not in INTERNAL_FORMATS:
            raise ConfigError(
                f"EngineConfig.internal_format must be one of {INTERNAL_FORMATS}, got {self.internal_format!r}"
            )
        if not isinstance(self.format, str) or not self.format:
            raise ConfigError(f"EngineConfig.format must be a non-empty string, got {self.format!r}")
        _check_int("mrf_tiles", self.mrf_tiles, 1, 1 << 24)
        _check_int("vrf_vectors", self.vrf_vectors, 1, 1 << 24)
        _check_int("fvrf_vectors", self.fvrf_vectors, 1, 1 << 24)
        _check_int("mfu_width", self.mfu_width, 1, 4096)
        if self.file_ports not in FILE_PORTS:
            raise ConfigError(f"EngineConfig.file_ports must be one of {FILE_PORTS}, got {self.file_ports!r}")
        if not isinstance(self.mrf_banked, bool):
            raise ConfigError(f"EngineConfig.mrf_banked must be a bool, got {self.mrf_banked!r}")
        if self.mrf_banked and self.mrf_tiles % self.tiles:
            raise ConfigError(f"EngineConfig.mrf_tiles={self.mrf_tiles} must be a multiple of tiles={self.tiles} "
                              "with mrf_banked (T banks of equal depth)")
        _check_int("file_parts", self.file_parts, 1, 64)
        if self.file_parts & (self.file_parts - 1):
            raise ConfigError(f"EngineConfig.file_parts must be a power of two, got {self.file_parts}")
        if self.file_parts > 1:
            unit = self.mfu_width * self.file_parts  # a part holds whole rows of the MFU's W banks
            for key in PARTED_FILES:
                depth = getattr(self, f"{key}_vectors")
                if depth & (depth - 1) or depth % unit:
                    raise ConfigError(f"EngineConfig.{key}_vectors={depth} with file_parts={self.file_parts}: "
                                      f"parts need a power-of-two depth, a multiple of mfu_width x file_parts "
                                      f"= {unit}")
        _check_int("vrf_reads", self.vrf_reads, 0, self.tiles)
        _check_int("mem_bytes", self.mem_bytes, 1 << 10, 1 << 36)
        _check_int("mem_port_bits", self.mem_port_bits, 8, 1 << 16)
        if self.mem_port_bits % 8:
            raise ConfigError(f"EngineConfig.mem_port_bits must be a multiple of 8, got {self.mem_port_bits}")
        _check_pos_float("mem_bandwidth_gbps", self.mem_bandwidth_gbps)
        _check_int("mem_latency_cycles", self.mem_latency_cycles, 0, 1 << 20)
        _check_pos_float("clock_mhz", self.clock_mhz)
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(f"EngineConfig.name must be a non-empty string, got {self.name!r}")

    # -- derived figures -------------------------------------------------------------------------
    @property
    def block(self) -> int:
        return self.native_dim

    @property
    def peak_macs_per_cycle(self) -> int:
        return self.tiles * self.native_dim * self.native_dim

    @property
    def exp_bias(self) -> int:
        return (1 << (self.exponent_bits - 1)) - 1

    @property
    def exp_min(self) -> int:
        """Smallest shared exponent (field 0); the all-ones field is reserved."""
        return -self.exp_bias

    @property
    def exp_max(self) -> int:
        return self.exp_bias

    @property
    def mantissa_bytes(self) -> int:
        """Bytes per stored element: sign + magnitude, little-endian sign-magnitude."""
        return (self.mantissa_bits + 1 + 7) // 8

    @property
    def bfp_vector_bytes(self) -> int:
        """External-memory bytes of one BFP N-vector: N elements then one exponent byte."""
        return self.native_dim * self.mantissa_bytes + 1

    @property
    def fp_vector_bytes(self) -> int:
        return 4 * self.native_dim

    @property
    def tile_bytes(self) -> int:
        """An N x N weight tile is N BFP row vectors (each row one block with its own exponent)."""
        return self.native_dim * self.bfp_vector_bytes

    @property
    def mem_bytes_per_cycle(self) -> float:
        """Sustained external-memory bytes per engine cycle: the narrower of port and bandwidth."""
        return min(self.mem_port_bits / 8, self.mem_bandwidth_gbps * 1e9 / (self.clock_mhz * 1e6))

    # -- formats, serialisation, identity ---------------------------------------------------------
    def with_format(self, name: str) -> EngineConfig:
        """This engine with another named BFP format.

        A format with a fixed block size re-shapes the engine to that native dimension and keeps
        its MACs per cycle as nearly as whole tile engines allow (T rescaled and rounded, at least 1;
        the VRF's reads in proportion, a banked MRF's depth a multiple of the new T).
        """
        fmt = format_named(name)
        n = fmt.block or self.native_dim
        tiles = max(1, round(self.tiles * self.native_dim**2 / n**2))
        reads = min(tiles, max(1, round(self.vrf_reads * tiles / self.tiles))) if self.vrf_reads else 0
        mrf = max(tiles, self.mrf_tiles // tiles * tiles) if self.mrf_banked else self.mrf_tiles
        return dataclasses.replace(
            self,
            native_dim=n,
            tiles=tiles,
            vrf_reads=reads,
            mrf_tiles=mrf,
            mantissa_bits=fmt.mantissa_bits,
            exponent_bits=fmt.exponent_bits,
            format=fmt.name,
        )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict) -> EngineConfig:
        if not isinstance(data, dict):
            raise ConfigError(f"EngineConfig JSON must be an object, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown EngineConfig field(s): {', '.join(unknown)}")
        try:
            return cls(**data)
        except TypeError as e:  # a required field is missing
            raise ConfigError(f"EngineConfig: {e}") from None

    @classmethod
    def from_json(cls, text: str) -> EngineConfig:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"EngineConfig JSON is malformed: {e}") from None
        return cls.from_dict(data)

    @property
    def hash(self) -> str:
        """Stable SHA-256 over every hardware parameter (the preset name is not part of it)."""
        data = self.to_dict()
        data.pop("name")
        if data["vrf_reads"] == data["tiles"]:  # a VRF read per tile engine: the same engine as 0
            data["vrf_reads"] = 0
        for key, legacy in _HASHED_IF_NOT.items():
            if data[key] == legacy:
                del data[key]
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()

    @property
    def short_hash(self) -> str:
        return self.hash[:12]

    def describe(self) -> str:
        return (
            f"{self.name}: N={self.native_dim} T={self.tiles} ({self.peak_macs_per_cycle} MACs/cycle), "
            f"format {self.format} (E{self.exponent_bits} M{self.mantissa_bits}), "
            f"{self.clock_mhz:g} MHz, {self.mem_bytes_per_cycle:g} B/cycle memory"
        )


PRESETS: dict[str, EngineConfig] = {
    "tiny": EngineConfig(
        name="tiny", native_dim=4, tiles=2, mantissa_bits=7, exponent_bits=8, format="custom",
        mrf_tiles=512, vrf_vectors=8192, fvrf_vectors=8192, file_ports="shared", mem_bytes=64 << 20,
        mem_port_bits=64, mem_bandwidth_gbps=0.8, mem_latency_cycles=8, clock_mhz=100.0,
    ),
    "ecp5": EngineConfig(
        name="ecp5", native_dim=4, tiles=1, mantissa_bits=7, exponent_bits=8, format="custom",
        mrf_tiles=1024, vrf_vectors=16384, fvrf_vectors=2048, file_ports="shared", mem_bytes=128 << 20,
        mem_port_bits=32, mem_bandwidth_gbps=0.2, mem_latency_cycles=12, clock_mhz=50.0,
    ),
    "a10": EngineConfig(
        name="a10", native_dim=16, tiles=12, mantissa_bits=7, exponent_bits=8, format="msfp16",
        mrf_tiles=6144, vrf_vectors=32768, fvrf_vectors=8192, mfu_width=4, file_ports="shared", mrf_banked=True,
        file_parts=2, vrf_reads=4, mem_bytes=8 << 30, mem_port_bits=512, mem_bandwidth_gbps=19.2,
        mem_latency_cycles=100, clock_mhz=300.0,
    ),
    "s10": EngineConfig(
        name="s10", native_dim=16, tiles=32, mantissa_bits=7, exponent_bits=8, format="msfp16",
        mrf_tiles=16384, vrf_vectors=131072, fvrf_vectors=16384, mfu_width=8, file_ports="shared", mrf_banked=True,
        file_parts=2, vrf_reads=8, mem_bytes=16 << 30, mem_port_bits=8192, mem_bandwidth_gbps=256.0,
        mem_latency_cycles=120, clock_mhz=250.0,
    ),
    "wide": EngineConfig(
        name="wide", native_dim=4, tiles=1, mantissa_bits=23, exponent_bits=8, format="custom",
        mrf_tiles=4096, vrf_vectors=65536, fvrf_vectors=65536, mem_bytes=256 << 20,
        mem_port_bits=128, mem_bandwidth_gbps=1.6, mem_latency_cycles=8, clock_mhz=100.0,
    ),
}


def preset(name: str) -> EngineConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(
            f"unknown preset {name!r}; known presets: {', '.join(PRESETS)}"
        ) from None
