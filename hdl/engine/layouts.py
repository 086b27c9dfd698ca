"""Data layouts of the engine's on-chip files, its memory port and its DMA commands.

On-chip entries hold decoded, canonical values (never the raw memory bytes):

* a BFP vector (VRF entry, MRF tile row): N two's-complement mantissas of ``M + 1`` bits and the
  biased shared-exponent field (``E`` bits; the all-ones field is never stored);
* an MRF entry: N such vectors, the rows of one weight tile;
* an FVRF entry: N binary32 bit patterns (flushed to zero: no subnormal, no -0 from a load).

The external-memory port moves whole words of ``W = mem_port_bits / 8`` bytes (byte ``i`` of a
word in bits ``[8i, 8i+8)``, little-endian) at word addresses: ``req`` carries reads and masked
writes in order, ``resp`` returns read data in request order. Writes have no response.
"""

from __future__ import annotations

from amaranth.hdl import signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from accelml.hdl.config import PARTED_FILES, EngineConfig
from accelml.hdl.isa import Space

__all__ = [
    "check_config", "word_bytes", "byte_addr_bits", "word_addr_bits", "vector_layout", "tile_layout",
    "fvector_layout", "mem_req_layout", "mem_port_signature", "dma_cmd_layout", "file_depth", "item_bytes",
    "DMA_MAX_LANES", "dma_lanes", "dma_max_lanes", "dma_store_room", "mvu_write_cycles", "FILE_USERS",
    "FILE_PORT_OWNERS", "MVU_WIDE_FILES", "mvu_vrf_reads", "mvu_gathers", "mvu_wide_reads", "SHARED_READS",
    "shared_ports", "port_conflict", "PORTS_OF",
    "part_sizes", "parts_of", "read_bit", "read_bits",
    "EXCLUSIVE_UNITS", "exclusive",
]

# file entries a DMA moves per cycle at most (the load DMA's write ports / the store DMA's read ports of a file)
DMA_MAX_LANES = 4


def check_config(cfg, who: str) -> EngineConfig:
    """``cfg`` as an EngineConfig this RTL builds, else TypeError / ValueError naming the parameter."""
    if not isinstance(cfg, EngineConfig):
        raise TypeError(f"{who} cfg must be an EngineConfig, got {type(cfg).__name__}")
    w = cfg.mem_port_bits // 8
    if w & (w - 1):
        raise ValueError(f"{who}: EngineConfig.mem_port_bits must be 8 times a power of two, got {cfg.mem_port_bits}")
    if cfg.mfu_width & (cfg.mfu_width - 1):  # the MFU's files are banked mfu_width ways (regfiles.py)
        raise ValueError(f"{who}: EngineConfig.mfu_width must be a power of two, got {cfg.mfu_width}")
    if cfg.internal_format != "fp32-ftz":
        raise ValueError(f"{who}: EngineConfig.internal_format {cfg.internal_format!r} is not built in RTL")
    return cfg


def word_bytes(cfg: EngineConfig) -> int:
    return cfg.mem_port_bits // 8


def byte_addr_bits(cfg: EngineConfig) -> int:
    """Width of an external byte address or size (holds ``cfg.mem_bytes`` itself)."""
    return ceil_log2(cfg.mem_bytes + 1)


def word_addr_bits(cfg: EngineConfig) -> int:
    return max(1, byte_addr_bits(cfg) - ceil_log2(word_bytes(cfg)))


def vector_layout(cfg: EngineConfig) -> data.StructLayout:
    return data.StructLayout({
        "mant": data.ArrayLayout(signed(cfg.mantissa_bits + 1), cfg.native_dim),
        "exp": unsigned(cfg.exponent_bits),
    })


def tile_layout(cfg: EngineConfig) -> data.ArrayLayout:
    return data.ArrayLayout(vector_layout(cfg), cfg.native_dim)


def fvector_layout(cfg: EngineConfig) -> data.ArrayLayout:
    return data.ArrayLayout(unsigned(32), cfg.native_dim)


def file_depth(cfg: EngineConfig, space: Space) -> int:
    return {Space.VRF: cfg.vrf_vectors, Space.MRF: cfg.mrf_tiles, Space.FVRF: cfg.fvrf_vectors}[space]


def item_bytes(cfg: EngineConfig, space: Space) -> int:
    """External-memory bytes of one entry of ``space`` (sim/memory.py's encodings)."""
    return {Space.VRF: cfg.bfp_vector_bytes, Space.MRF: cfg.tile_bytes, Space.FVRF: cfg.fp_vector_bytes}[space]


def dma_lanes(word: int, item: int, max_lanes: int = DMA_MAX_LANES) -> int:
    """Entries of ``item`` bytes a load writes (a store reads) per cycle with ``word``-byte memory
    words: as many as a word's bytes can complete (``ceil(word / item)``, so a word per cycle flows), at most
    ``max_lanes`` (:func:`dma_max_lanes`). ``accelml.sim.cycles`` models the same count."""
    return max(1, min(-(-word // item), max_lanes))


def dma_max_lanes(cfg: EngineConfig, space: Space) -> int:
    """Lanes a DMA may have on ``space``: :data:`DMA_MAX_LANES` on a port set per unit (a lane is one
    more port of the file). On shared ports (``file_ports="shared"``) the lanes go through the
    shared port of each bank: as many as the file has banks (``mfu_width`` for the VRF and the
    FVRF, which the MFU's wide ports bank; one for the MRF), so that a cycle's entries, consecutive
    (of one row: ``hdl/engine/dma.py``), fall in different banks."""
    if cfg.file_ports != "shared":
        return DMA_MAX_LANES
    return min(DMA_MAX_LANES, cfg.mfu_width) if space in (Space.VRF, Space.FVRF) else 1


def dma_store_room(word: int, item: int, max_lanes: int = DMA_MAX_LANES) -> int:
    """Bytes a store's buffer may hold, counting the entries read but not yet in it: a store reads
    entries while they fit. Three words beyond the entries of one cycle's reads keep a whole word
    in the buffer in every cycle, since the buffer's fill is counted before the cycle's write."""
    return dma_lanes(word, item, max_lanes) * item + 3 * word


# register-file ports per unit (RegisterFiles users, named after control.UNITS); the MVU also has T
# read ports on the VRF and the MRF (RegisterFiles wide={"mvu": cfg.tiles}, MVU_WIDE_FILES); its FVRF
# port reads an accumulating mvc's sums ahead of its rounds (hdl/engine/mvu.py) through the MFU's
# (SHARED_READS)
FILE_USERS = {
    "dma_load": {Space.VRF: "w", Space.MRF: "w", Space.FVRF: "w"},
    "dma_store": {Space.VRF: "r", Space.MRF: "r", Space.FVRF: "r"},
    "mfu": {Space.VRF: "rw", Space.FVRF: "rw"},
    "mvu": {Space.FVRF: "rw"},
    "mfu_b": {Space.FVRF: "r"},  # the MFU's second FVRF read port (vop's second operand)
}
# users whose ports belong to a unit of another name: user -> (unit, suffix of the unit's member)
FILE_PORT_OWNERS = {"mfu_b": ("mfu", "_b")}
# units that use another unit's register-file ports (and lanes): the pool's VRF reads and FVRF
# writes go through the MFU's (hdl/engine/mfu.py lends them), so the two never run at once
PORTS_OF = {"pool": "mfu"}
# the files the MVU reads through one-entry ports: T on the MRF (one per tile engine), mvu_vrf_reads
# on the VRF
MVU_WIDE_FILES = (Space.VRF, Space.MRF)


def mvu_vrf_reads(cfg) -> int:
    """The MVU's VRF read ports, V: ``EngineConfig.vrf_reads``, or one per tile engine (T)."""
    return cfg.vrf_reads or cfg.tiles


def mvu_gathers(cfg) -> bool:
    """The MVU reads the VRF through fewer ports than tile engines (``mvu.Mvu._gather``): a step's
    distinct entries V a cycle, a step of several reads taking several cycles."""
    return mvu_vrf_reads(cfg) < cfg.tiles


def mvu_wide_reads(cfg) -> dict[Space, int]:
    """The MVU's one-entry read ports on each of ``MVU_WIDE_FILES``."""
    return {Space.VRF: mvu_vrf_reads(cfg), Space.MRF: cfg.tiles}


# read ports shared whatever EngineConfig.file_ports (shared_ports): the MVU's FVRF reads (an
# accumulating mvc's sums, read ahead) take the MFU's port, so an accumulating mvc and an MFU
# instruction reading the FVRF take turns (measured free on the compiled seed models:
# bitstreams/banking.py, fvrf_read_sharing)
SHARED_READS = {Space.FVRF: ("mfu", "mvu")}
EXCLUSIVE_UNITS = (("pool", "mfu"),)  # tuples, not sets: the emitted Verilog follows this order


def exclusive(unit_a: str, unit_b: str) -> bool:
    """May instructions of ``unit_a`` and ``unit_b`` not be in flight together (they share hardware)?"""
    return (unit_a, unit_b) in EXCLUSIVE_UNITS or (unit_b, unit_a) in EXCLUSIVE_UNITS


def shared_ports(cfg: EngineConfig) -> dict[tuple[Space, bool], tuple[str, ...]]:
    """The ports several units share, ``(file, write) -> units``. Whatever ``file_ports``: the MVU's
    FVRF reads share the MFU's port (:data:`SHARED_READS`). With ``file_ports="shared"`` one write
    port per file (its writers in ``FILE_USERS``) and one read port (its readers beside the MVU's T
    and the MFU's second operand, ``FILE_PORT_OWNERS``). Control never has two instructions of
    different units in flight that would use one shared port (:func:`port_conflict`). A banked MRF
    (``EngineConfig.mrf_banked``) has one read port per bank, the MVU's: the store DMA's MRF reads
    share them, so a store from the MRF and an ``mvc`` never run at once (``(MRF, read) ->
    ("dma_store", "mvu")``)."""
    out = {}
    if cfg.file_ports == "shared":
        for write in (True, False):
            for space in Space:
                units = tuple(u for u, spaces in FILE_USERS.items()
                              if u not in FILE_PORT_OWNERS and ("w" if write else "r") in spaces.get(space, ""))
                if len(units) > 1:
                    out[(space, write)] = units
    for space, units in SHARED_READS.items():  # with "shared", the file's one read port has them already
        out.setdefault((space, False), units)
    if cfg.mrf_banked:
        out[(Space.MRF, False)] = ("dma_store", "mvu")
    return out


def part_sizes(cfg: EngineConfig) -> dict[str, int]:
    """Entries per part of the files ``EngineConfig.file_parts`` splits (``config.PARTED_FILES``), by
    their names in lower case; ``{}`` when the files are whole. Entry ``e`` is in part ``e // size``."""
    if cfg.file_parts == 1:
        return {}
    return {key: getattr(cfg, f"{key}_vectors") // cfg.file_parts for key in PARTED_FILES}


def parts_of(cfg: EngineConfig, space: Space) -> int:
    """Parts ``space`` is built in (``EngineConfig.file_parts`` for ``PARTED_FILES``; 1: whole)."""
    return cfg.file_parts if space.name.lower() in PARTED_FILES else 1


def read_bit(cfg: EngineConfig, space: Space) -> int:
    """The first of ``space``'s bits in control's ``{unit}_reads``: a bit per file and part, in
    ``Space`` order (:func:`parts_of` bits each)."""
    return sum(parts_of(cfg, s) for s in Space if s.value < space.value)


def read_bits(cfg: EngineConfig) -> int:
    """The width of control's ``{unit}_reads`` (:func:`read_bit`)."""
    return sum(parts_of(cfg, s) for s in Space)


def port_conflict(shared: dict, unit_a: str, ranges_a, unit_b: str, ranges_b, parts: dict | None = None) -> bool:
    """Would instructions of ``unit_a`` and ``unit_b`` (operand ranges ``(space, lo, hi, write)``,
    space a ``Space`` name in lower case or ``"mem"``) use one shared port (``shared_ports``)? On a
    file in parts (``parts``: :func:`part_sizes`) each part has its own, so only spans that touch a
    common part meet. The rule control's hazard check applies in hardware and
    ``accelml.sim.cycles`` models."""
    unit_a, unit_b = PORTS_OF.get(unit_a, unit_a), PORTS_OF.get(unit_b, unit_b)
    if unit_a == unit_b or not shared:
        return False
    for sa, la, ha, wa in ranges_a:
        if ha <= la or sa == "mem":
            continue
        units = shared.get((Space[sa.upper()], bool(wa)), ())
        if unit_a not in units or unit_b not in units:
            continue
        size = (parts or {}).get(sa)
        for sb, lb, hb, wb in ranges_b:
            if sb != sa or hb <= lb or bool(wb) != bool(wa):
                continue
            if size is None or (la // size <= (hb - 1) // size and lb // size <= (ha - 1) // size):
                return True
    return False


def mvu_write_cycles(tiles: int, width: int, group: int = 0) -> int:
    """Cycles the MVU writes a round's ``tiles`` results in: ``width`` (``mfu_width``) consecutive FVRF
    entries a cycle, from any start (the FVRF's wide write port). ``group``: a banked MRF's ``mvc``
    of ``group`` < T output blocks writing at a pixel stride of its own (isa.md, ``dstride``): a
    round's results are then runs of ``group`` entries, and a cycle writes the part of one run in
    one ``width``-lane window of the round's lanes. ``accelml.sim.cycles`` models the same count."""
    if group and group < tiles:
        return len({(lane // width, lane // group) for lane in range(tiles)})
    return -(-tiles // width)


def mem_req_layout(cfg: EngineConfig) -> data.StructLayout:
    w = word_bytes(cfg)
    return data.StructLayout({
        "addr": unsigned(word_addr_bits(cfg)),
        "write": unsigned(1),
        "data": unsigned(8 * w),
        "mask": unsigned(w),
    })


def mem_port_signature(cfg: EngineConfig) -> wiring.Signature:
    """The engine's side of the external-memory port (the memory model flips it)."""
    return wiring.Signature({
        "req": Out(stream.Signature(mem_req_layout(cfg))),
        "resp": In(stream.Signature(unsigned(8 * word_bytes(cfg)))),
    })


def dma_cmd_layout(cfg: EngineConfig) -> data.StructLayout:
    """One checked ``ld`` / ``st``: every range already lies inside the files and the image."""
    return data.StructLayout({
        "store": unsigned(1),
        "space": Space,
        "base": unsigned(32),  # first on-chip entry
        "chip_stride": unsigned(32),  # entries between rows (never 0: packed rows resolved)
        "addr": unsigned(byte_addr_bits(cfg)),  # first byte in external memory
        "mem_stride": unsigned(32),  # bytes between rows (never 0)
        "rows": unsigned(16),
        "length": unsigned(16),  # entries per row
        # a load into a banked MRF: each row written this many times side by side (isa.md)
        **({"copies": unsigned(16)} if cfg.mrf_banked else {}),
    })
