"""The on-chip register files: VRF (BFP vectors), MRF (N x N BFP tiles), FVRF (binary32 vectors).

Each file is ``amaranth.lib.memory.Memory`` of ``layouts.vector_layout`` / ``tile_layout`` /
``fvector_layout`` entries; each of its users has its own write port and / or synchronous read port
(data the cycle after the address), exposed as a :func:`file_port_signature` member. Depths come
from the EngineConfig. The engine's users and ports (``layouts.FILE_USERS``):

====  =================================  =========================================================
file  write ports                        read ports
====  =================================  =========================================================
VRF   dma_load, mfu (``qnt``)            dma_store, mfu (``deq``; a ``pool``'s taps), mvu x V
MRF   dma_load                           dma_store, mvu x T
FVRF  dma_load, mfu (a ``pool``'s), mvu  dma_store, mfu and mvu (one shared port), mfu_b (``vop``'s
                                         second operand)
====  =================================  =========================================================

The matrix-vector unit's VRF and MRF reads are ``wide``: T = ``cfg.tiles`` synchronous read ports
per file (one per tile engine: its activation block and weight tile) behind one enable (``en`` low
holds the data read last), a :func:`read_ports_signature` member ``{user}_{file}_wide``
(``wide_files``: the files they are on; the count may differ by file: the engine's MVU has V =
``layouts.mvu_vrf_reads`` on the VRF, ``EngineConfig.vrf_reads``, T by default). Its FVRF port
reads as it writes, ``mfu_width`` entries wide (an accumulating ``mvc``'s sums, read ahead:
``mvu.py``); in the engine that read shares the MFU's port (``layouts.SHARED_READS``). Every read
port is a copy of the memory in hardware (or one more port of a multi-ported RAM).
Each DMA lane beyond the first adds a write port (``dma_load{lane}``) and a read port
(``dma_store{lane}``) (``Dma.lane_users``: entries narrower than a memory word move several a
cycle).

Shared ports (``shared``; the engine's: ``layouts.shared_ports``): an FPGA RAM block has one write
port, and every read port is one more copy of the memory, so a file with a write port per writing
unit is built from flip-flops. A shared write port is taken by the writer writing (the users'
enables pick it); a shared read port is addressed by the reader whose ``{user}_{file}_active``
input is set (control's ``{unit}_reads``: the files the unit's instruction in flight reads). With
``EngineConfig.file_ports = "shared"`` each file has one write port (per bank) and one read port
(per bank) for its readers besides the MVU's T and the MFU's second operand; with ``"unit"`` only
the MVU's FVRF read shares the MFU's. Control never runs two instructions of
different units that would use one shared port at once (``layouts.port_conflict``, modelled by
``accelml.sim.cycles``), so the users never meet on it.

Files in parts (``EngineConfig.file_parts`` = P; the VRF and the FVRF): each bank of the file is
P memories of 1 / P of its rows (entry ``e`` in part ``e // (depth / P)``), each with the file's
write ports and read ports, so a shared port is one per part: a shared write port of a part is
taken by the writer writing there, a shared read port of a part is addressed by the reader whose
``{user}_{file}_active`` has bit p set (control's ``{unit}_reads``: a bit per file and part, from
the spans of the unit's instruction in flight). A read selects its part the cycle after, as it
selects its bank. The parts cost no RAM bits (a part shallower than a RAM block wastes the rest of
it) but multiplexers: :meth:`FilePlan.part_mux_bits`.

On a banked file a shared read port of a bank is addressed by a one-entry reader only for the entry
in that bank: the DMA's lanes (``dma_load{lane}`` / ``dma_store{lane}``, consecutive entries, at
most one per bank: ``layouts.dma_max_lanes``) share the banks' ports that way.

Wide ports: a user given a width W (``widths``; the MFU's ports and the MVU's FVRF write,
W = ``mfu_width``) reads or writes
W consecutive entries from any start in one cycle (lane k holds entry ``start + k``; a write has a
mask of W lanes). A file with such a user is built of W banks (W a power of two): entry ``e`` is in
bank ``e mod W`` at ``e // W``, so W consecutive entries hit each bank once; a rotation crossbar
maps lanes to banks on the write side and banks to lanes on the read side. A one-entry port
(the DMAs', each of the MVU's T VRF reads) on a banked file writes the one bank its
entry is in and reads every bank at the entry's row, selecting the entry's bank the cycle after.

A banked MRF (``EngineConfig.mrf_banked``, docs/isa.md): T banks, entry ``e`` in bank ``e mod T`` at
row ``e // T`` (T need not be a power of two); the ``wide`` users' port t reads bank t only, at the
row it gives (no multiplexer: the MVU keeps engine t on bank t); the load DMA's write also writes
the copies its ``{user}_mrf_copies`` mask names (bit d: the entry d on), each in its own bank, in
the entry's row or the next.

In the emitted Verilog (``RegisterFiles(verilog_rams=True)``, the engine's ``verilog_modules``)
each memory is an instance of the plain module ``accelml_ram`` (:data:`RAM_VERILOG`): the same
write ports and synchronous, non-transparent read ports, zeroed by a loop at time 0. Amaranth
writes a memory's initial value one bit at a time: the `a10` engine's files were 85 K of its 393 K
lines, all zeros (its emission went from 498 to 407 s; the DMA's byte shifts as instances then
took most of the rest away, ``dma.byte_shift``).
"""

from __future__ import annotations

from types import SimpleNamespace

from amaranth.hdl import Array, Cat, ClockSignal, Const, Instance, Module, Mux, Shape, Signal
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from accelml.hdl.errors import ConfigError
from accelml.hdl.isa import Space

from .layouts import check_config, file_depth, fvector_layout, parts_of, tile_layout, vector_layout

__all__ = ["RegisterFiles", "FilePlan", "file_port_signature", "read_ports_signature", "file_shape", "file_addr_bits",
           "RAM_VERILOG"]

# A register file's memory in the emitted Verilog: NW write ports, NR synchronous read ports (the
# data before a write in the same cycle; ``re`` low holds it), port k's fields at k * width.
RAM_VERILOG = """
module accelml_ram #(parameter WIDTH = 8, parameter DEPTH = 16, parameter ABITS = 4,
                     parameter NW = 1, parameter NR = 1) (
    input wire clk,
    input wire [NW-1:0] we,
    input wire [NW*ABITS-1:0] waddr,
    input wire [NW*WIDTH-1:0] wdata,
    input wire [NR-1:0] re,
    input wire [NR*ABITS-1:0] raddr,
    output wire [NR*WIDTH-1:0] rdata
);
    reg [WIDTH-1:0] mem [0:DEPTH-1];
    integer i;
    initial for (i = 0; i < DEPTH; i = i + 1) mem[i] = {WIDTH{1'b0}};
    genvar k;
    generate
        for (k = 0; k < NW; k = k + 1) begin : w
            always @(posedge clk)
                if (we[k]) mem[waddr[k*ABITS +: ABITS]] <= wdata[k*WIDTH +: WIDTH];
        end
        for (k = 0; k < NR; k = k + 1) begin : r
            reg [WIDTH-1:0] q = {WIDTH{1'b0}};
            always @(posedge clk)
                if (re[k]) q <= mem[raddr[k*ABITS +: ABITS]];
            assign rdata[k*WIDTH +: WIDTH] = q;
        end
    endgenerate
endmodule
"""


class _VerilogRam:
    """The ports of one memory built as an ``accelml_ram`` instance (``instance()``), with the
    ``depth``, ``write_port()`` and ``read_port()`` of the ``Memory`` it stands for."""

    def __init__(self, shape, depth: int):
        self.shape, self.depth = shape, depth
        self.abits = max(1, ceil_log2(depth))
        self.writes: list[SimpleNamespace] = []
        self.reads: list[SimpleNamespace] = []

    def write_port(self) -> SimpleNamespace:
        port = SimpleNamespace(en=Signal(), addr=Signal(self.abits), data=Signal(self.shape))
        self.writes.append(port)
        return port

    def read_port(self) -> SimpleNamespace:
        port = SimpleNamespace(en=Signal(init=1), addr=Signal(self.abits), data=Signal(self.shape))
        self.reads.append(port)
        return port

    def instance(self) -> Instance:
        w, r = self.writes, self.reads
        return Instance(
            "accelml_ram", p_WIDTH=Shape.cast(self.shape).width, p_DEPTH=self.depth, p_ABITS=self.abits,
            p_NW=len(w), p_NR=len(r), i_clk=ClockSignal("sync"),
            i_we=Cat(p.en for p in w), i_waddr=Cat(p.addr for p in w), i_wdata=Cat(p.data.as_value() for p in w),
            i_re=Cat(p.en for p in r), i_raddr=Cat(p.addr for p in r), o_rdata=Cat(p.data.as_value() for p in r))


def file_shape(cfg, space: Space):
    return {Space.VRF: vector_layout, Space.MRF: tile_layout, Space.FVRF: fvector_layout}[space](cfg)


def file_addr_bits(cfg, space: Space) -> int:
    return max(1, ceil_log2(file_depth(cfg, space)))


# Amaranth 0.5 builds a signal's bits driven from one module as one netlist cell, at most 2**16 bits
# wide (an AssertionError while emitting beyond it)
MAX_SIGNAL_BITS = 1 << 16


def read_ports_signature(cfg, space: Space, count: int) -> wiring.Signature:
    """A user's side of ``count`` read ports of one file: ``addr[t]`` -> ``data[t]`` the next cycle
    when ``en`` is high (held while it is low). ``data`` is one array signal, or, where that would
    be wider than ``MAX_SIGNAL_BITS`` (the MRF's 32 tiles at `s10`), ``count`` signals."""
    aw = file_addr_bits(cfg, space)
    shape = file_shape(cfg, space)
    apart = count * data.Layout.cast(shape).size > MAX_SIGNAL_BITS
    return wiring.Signature({
        "en": Out(1), "addr": Out(data.ArrayLayout(aw, count)),
        "data": In(shape).array(count) if apart else In(data.ArrayLayout(shape, count)),
    })


def file_port_signature(cfg, space: Space, width: int | None = None) -> wiring.Signature:
    """A user's side of one file: write (``we``, ``waddr``, ``wdata``) and read (``raddr`` -> ``rdata``).

    With a ``width`` W: ``wdata`` / ``rdata`` are arrays of W entries (entries ``addr + k``) and
    ``we`` a mask of W lanes."""
    aw = file_addr_bits(cfg, space)
    shape = file_shape(cfg, space)
    if width is not None:
        shape = data.ArrayLayout(shape, width)
    return wiring.Signature({
        "we": Out(1 if width is None else width), "waddr": Out(aw), "wdata": Out(shape), "raddr": Out(aw),
        "rdata": In(shape),
    })


class FilePlan:
    """The register files' ports without the hardware: who has which port of which file
    (``RegisterFiles``' arguments, validated) and what that costs in ports and multiplexer bits.
    What the resource model and the synthesis checks count (``top.file_plan``)."""

    def __init__(self, cfg, users: dict | None = None, widths: dict | None = None, *, wide: dict | None = None,
                 shared: dict | None = None, wide_files=tuple(Space)):
        self.cfg = check_config(cfg, "RegisterFiles")
        self.wide_files = tuple(wide_files)  # the files the ``wide`` users' T one-entry reads are on
        if users is None:
            users = {"": {space: "rw" for space in Space}}
        for user, spaces in users.items():
            for space, mode in spaces.items():
                if not isinstance(space, Space) or mode not in ("r", "w", "rw"):
                    raise ValueError(f"RegisterFiles user {user!r}: {space!r} -> {mode!r} is not Space -> r|w|rw")
        self.users = {u: dict(sp) for u, sp in users.items()}
        self.widths = dict(widths or {})
        self.banks = {}
        for space in Space:
            ws = {self.widths[u] for u, sp in self.users.items() if space in sp and u in self.widths}
            if len(ws) > 1 or any(not isinstance(w, int) or w < 1 or w & (w - 1) for w in ws):
                raise ConfigError(f"RegisterFiles {space.name}: wide ports of {sorted(ws)} entries (the engine's: "
                                  f"EngineConfig.mfu_width) are not one power of two")
            self.banks[space] = ws.pop() if ws else 1
        # a banked MRF (EngineConfig.mrf_banked): T banks, entry e in bank e mod T at e // T, the
        # wide users' port t reading bank t only, at the row it gives (isa.md, "Banked MRF")
        self.direct = set()
        if self.cfg.mrf_banked:
            if self.banks[Space.MRF] != 1:
                raise ConfigError("RegisterFiles MRF: a banked MRF takes no wide ports")
            self.banks[Space.MRF] = self.cfg.tiles
            self.direct.add(Space.MRF)
        # the loads' writer of a banked MRF: it writes an entry's copies (isa.md) in the entry's cycle
        self.copies_user = "dma_load" if self.direct and "w" in self.users.get("dma_load", {}).get(Space.MRF, "") \
            else None
        # files in parts (EngineConfig.file_parts): each bank as ``parts`` memories of its rows
        self.parts = {space: parts_of(self.cfg, space) for space in Space}
        self.wide = dict(wide or {})
        for user, count in self.wide.items():
            for c in count.values() if isinstance(count, dict) else (count,):
                if isinstance(c, bool) or not isinstance(c, int) or c < 1:
                    raise ValueError(f"RegisterFiles wide reads of {user!r} must be positive integers, got {count!r}")
        self.shared = {}
        for (space, write), group in (shared or {}).items():
            mode = "w" if write else "r"
            bad = [u for u in group if mode not in self.users.get(u, {}).get(space, "")
                   and not (not write and space in self.direct and u in self.wide)]
            if bad:
                raise ValueError(f"RegisterFiles shared {space.name} {'write' if write else 'read'} port: "
                                 f"{', '.join(map(repr, bad))} do not {'write' if write else 'read'} it")
            self.shared[(space, bool(write))] = tuple(group)
        # a banked MRF's readers that share the wide users' bank ports (isa.md, "Banked MRF": the
        # store DMA's reads take bank e mod T's port while no mvc is in flight)
        self.on_banks = {space: tuple(u for u in self.shared.get((space, False), ()) if u not in self.wide)
                         for space in self.direct if set(self.wide) & set(self.shared.get((space, False), ()))}
        for space, users in self.on_banks.items():
            extra = [u for u, spaces in self.users.items() if "r" in spaces.get(space, "") and u not in users]
            if extra:
                raise ConfigError(f"RegisterFiles {space.name}: the readers {', '.join(map(repr, extra))} have no "
                                  f"port of a banked file's banks (one DMA lane of its entries: the banks' ports "
                                  f"are the MVU's, which the store DMA's reads share)")

    def wide_reads(self, space: Space) -> dict[str, int]:
        """The ``wide`` users' one-entry read ports on ``space``: user -> count (a user's count is one
        for every file of ``wide_files``, or given per file)."""
        if space not in self.wide_files:
            return {}
        return {user: count.get(space, 0) if isinstance(count, dict) else count
                for user, count in self.wide.items()}

    def active_inputs(self) -> list[tuple[str, Space]]:
        """The readers of shared read ports that say when they read (``{user}_{file}_active``): every
        one with a port of its own on the file (the ``wide`` users' bank ports of a banked MRF are
        theirs: the store DMA's reads take them while no ``mvc`` is in flight)."""
        return [(user, space) for (space, write), group in self.shared.items() if not write
                for user in group if space in self.users.get(user, {})]

    def _ports(self, space: Space, mode: str) -> int:
        users = [u for u, spaces in self.users.items() if mode in spaces.get(space, "")]
        group = self.shared.get((space, mode == "w"), ())
        if mode == "r" and space in self.on_banks:  # they read through the wide users' bank ports
            group = ()
            users = [u for u in users if u not in self.on_banks[space]]
        return sum(u not in group for u in users) + any(u in group for u in users)

    def write_ports(self) -> dict[Space, int]:
        """Write ports per file (per bank), as ``elaborate`` builds them: one per writing user, one
        per shared group. A RAM block has one: synthesis builds a file with more from flip-flops."""
        return {space: self._ports(space, "w") for space in Space}

    def read_ports(self) -> dict[Space, int]:
        """Read ports per file (per bank), as ``elaborate`` builds them: one per reading user or
        shared group, and the ``wide`` users' T each. Each is a copy of the memory in RAM blocks."""
        return {space: self._ports(space, "r") + (bool(self.wide_reads(space)) if space in self.direct
                                                  else sum(self.wide_reads(space).values()))
                for space in Space}

    def mux_bits(self) -> int:
        """The W:1 multiplexer bits that the banked files (W = ``banks``) build, as ``elaborate``
        builds them: per wide port a rotation crossbar of W lanes x the entry's bits on each side it
        uses (write: lanes to banks; read: banks to lanes); per one-entry read port, including each
        of the ``wide`` users' T, one entry's bits selected from the W banks. What the resource
        model prices (``bitstreams.resources``, calibrated by synthesising one wide port)."""
        bits = 0
        for space in Space:
            nb = self.banks[space]
            if nb == 1:
                continue
            entry = file_shape(self.cfg, space).size
            for user, spaces in self.users.items():
                mode = spaces.get(space, "")
                if user in self.widths:
                    bits += nb * entry * (("r" in mode) + ("w" in mode))
                else:
                    bits += entry * ("r" in mode)
            if space not in self.direct and space in self.wide_files:  # a banked MRF's engine t reads bank t
                bits += entry * sum(self.wide_reads(space).values())
        return bits

    def part_mux_bits(self) -> dict[str, dict[int, int]]:
        """The multiplexers a file in parts (``EngineConfig.file_parts``) adds, as ``elaborate``
        builds them: ``"read"``, ``{P: bits}`` of P:1 selects, per read port (each reader's, each of
        the ``wide`` users' T) each bank's entry selected from its P parts; ``"write"``, ``{k:
        bits}`` of k:1 selects, per shared write port of k writers the writer's entry selected for
        each part beyond the first (each part takes its own writer). What the resource model prices
        beside :meth:`mux_bits`."""
        out: dict[str, dict[int, int]] = {"read": {}, "write": {}}
        for space in Space:
            np_, nb = self.parts[space], self.banks[space]
            if np_ == 1:
                continue
            entry = file_shape(self.cfg, space).size
            readers = sum("r" in spaces.get(space, "") for spaces in self.users.values())
            readers += sum(self.wide_reads(space).values())
            out["read"][np_] = out["read"].get(np_, 0) + readers * nb * entry
            group = self.shared.get((space, True), ())
            writers = sum("w" in self.users.get(u, {}).get(space, "") for u in group)
            if writers > 1:
                out["write"][writers] = out["write"].get(writers, 0) + (np_ - 1) * nb * entry
        return out

    @staticmethod
    def port_name(user: str, space: Space) -> str:
        return f"{user}_{space.name.lower()}" if user else space.name.lower()


class RegisterFiles(FilePlan, wiring.Component):
    """The three files with one port set per user (or per shared group, ``shared``).

    ``users`` maps a user's name to ``{Space: "r" | "w" | "rw"}``: the user gets a
    :func:`file_port_signature` member ``{user}_{file}`` (``vrf``, ``mrf``, ``fvrf``), backed by a
    write port of that file if it writes and a synchronous read port if it reads, so every user
    reads and writes in the same cycle as the others. ``widths`` maps a user to the entries its
    ports move per cycle (a wide port, the module docstring; the others move one entry). The engine
    keeps users from touching the same entries at once (control's hazard check), so two write ports
    never write one entry in a cycle. Without ``users``: one user named ``""`` reading and writing
    every file (members ``vrf``, ``mrf``, ``fvrf``). ``wide`` maps a user to a count T: it also gets
    a :func:`read_ports_signature` member ``{user}_{file}_wide`` of T one-entry read ports on each
    file of ``wide_files`` (default: every file). ``shared`` maps ``(Space, write)`` to users that
    share one write (``write`` true) or read port of that file; a read group's users get an input
    ``{user}_{file}_active`` each, set while that user reads the file (at most one of a group at a
    time); on a banked MRF the store DMA's reads may share the ``wide`` users' bank ports that way.
    """

    def __init__(self, cfg, users: dict | None = None, widths: dict | None = None, *, wide: dict | None = None,
                 shared: dict | None = None, wide_files=tuple(Space), verilog_rams: bool = False):
        FilePlan.__init__(self, cfg, users, widths, wide=wide, shared=shared, wide_files=wide_files)
        self.verilog_rams = bool(verilog_rams)
        members = {self.port_name(user, space): In(file_port_signature(cfg, space, self.widths.get(user)))
                   for user, spaces in self.users.items() for space in spaces}
        members.update({f"{self.port_name(user, space)}_active": In(self.parts[space])
                        for user, space in self.active_inputs()})
        members.update({f"{self.port_name(user, space)}_wide": In(read_ports_signature(cfg, space, count))
                        for space in self.wide_files for user, count in self.wide_reads(space).items()})
        if self.copies_user is not None:  # a banked MRF: bit d, a copy of the entry written d entries on
            members[f"{self.copies_user}_mrf_copies"] = In(cfg.tiles)
        wiring.Component.__init__(self, members)

    def elaborate(self, platform):
        m = Module()
        for space in Space:
            name = space.name.lower()
            nb = self.banks[space]
            lb = nb.bit_length() - 1  # bank index bits of a power of two (the wide ports' W)
            sb = max(1, ceil_log2(nb))  # bits of a bank index
            depth = file_depth(self.cfg, space)
            shape, rows = file_shape(self.cfg, space), -(-depth // nb)
            # a file in parts (EngineConfig.file_parts): bank b's rows in np_ memories, row r in part
            # r // prows at r % prows (powers of two: EngineConfig checks the depths)
            np_ = self.parts[space]
            prows = rows // np_
            pb, ppb = ceil_log2(prows), ceil_log2(np_)

            def key(b, p, name=name, nb=nb, np_=np_):
                return (name if nb == 1 else f"{name}_{b}") + (f"_p{p}" if np_ > 1 else "")

            mems = []  # mems[b][p]
            for b in range(nb):
                parts = []
                for p in range(np_):
                    mem = _VerilogRam(shape, prows) if self.verilog_rams else Memory(shape=shape, depth=prows, init=[])
                    if not self.verilog_rams:
                        m.submodules[key(b, p)] = mem
                    parts.append(mem)
                mems.append(parts)

            def bank_of(addr, lb=lb, nb=nb):
                if nb & (nb - 1):  # a banked MRF of T banks, T not a power of two
                    return addr % nb
                return addr[:lb] if lb else Const(0, 1)

            def row_of(addr, lb=lb, nb=nb):
                if nb & (nb - 1):
                    return addr // nb
                return addr[lb:] if lb else addr

            def in_part(row, pb=pb, np_=np_):  # a bank's row within its part
                return row[:pb] if np_ > 1 else row

            def part_of(row, pb=pb, ppb=ppb):  # the part a bank's row is in (a file in parts)
                return row[pb:pb + ppb]

            def parted(en, row, dat, np_=np_):  # a bank's write, per part
                if np_ == 1:
                    return [(en, row, dat)]
                return [(en & (part_of(row) == p), in_part(row), dat) for p in range(np_)]

            writes, reads = [], []  # per user: (user, [[(en, row, data) per part] per bank]) / (user, [row per bank])
            banks_of = {}  # a reader's start's bank
            for user, spaces in self.users.items():
                mode = spaces.get(space)
                if mode is None:
                    continue
                port = getattr(self, self.port_name(user, space))
                wide = user in self.widths
                if "w" in mode:
                    wbank = bank_of(port.waddr)
                    banks = []
                    for b in range(nb):
                        if wide:  # bank b takes the lane whose entry it holds
                            lane = Signal(max(1, lb), name=f"{user}_{name}_wlane_{b}")
                            m.d.comb += lane.eq(b - wbank)
                            lanes = [port.wdata[k].as_value() for k in range(nb)]
                            banks.append(parted(Array(port.we[k] for k in range(nb))[lane], row_of(port.waddr + lane),
                                                Array(lanes)[lane]))
                        elif user == self.copies_user and space in self.direct:
                            # bank b takes the copy d = (b - bank) mod T entries on, if there is one:
                            # the entry's row, or the next one for a bank below the entry's
                            # (the last bank is never below the entry's: no comparison that cannot fail)
                            mask = getattr(self, f"{user}_mrf_copies")
                            d = Signal(sb, name=f"{user}_{name}_copy_{b}")
                            below = (b < wbank) if b < nb - 1 else Const(0)
                            m.d.comb += d.eq(Mux(below, b + nb - wbank, b - wbank))
                            banks.append(parted(port.we & Array(mask[k] for k in range(nb))[d],
                                                row_of(port.waddr) + below, port.wdata.as_value()))
                        else:
                            banks.append(parted(port.we & (wbank == b), row_of(port.waddr), port.wdata.as_value()))
                    writes.append((user, banks))
                if "r" in mode:
                    rbank = bank_of(port.raddr)
                    banks_of[user] = rbank
                    rows_of = []
                    for b in range(nb):
                        if wide:
                            lane = Signal(max(1, lb), name=f"{user}_{name}_rlane_{b}")
                            m.d.comb += lane.eq(b - rbank)
                            rows_of.append(row_of(port.raddr + lane))
                        else:
                            rows_of.append(row_of(port.raddr))
                    reads.append((user, rows_of))
            # write ports: one per writer, or one shared by the writers of a shared group (the one
            # writing takes it: control keeps the others idle); on a file in parts, per part
            group = self.shared.get((space, True), ())
            for b, parts in enumerate(mems):
                for p, mem in enumerate(parts):
                    tag = f"{b}" if np_ == 1 else f"{b}_p{p}"
                    solo = [banks[b][p] for user, banks in writes if user not in group]
                    pooled = [banks[b][p] for user, banks in writes if user in group]
                    if pooled:
                        en, row, dat = (Signal(name=f"{name}_shared_we_{tag}"),
                                        Signal(max(1, ceil_log2(mem.depth)), name=f"{name}_shared_waddr_{tag}"),
                                        Signal(shape.size, name=f"{name}_shared_wdata_{tag}"))
                        solo.append((en, row, dat))
                        m.d.comb += en.eq(Cat(*(e for e, _, _ in pooled)).any())
                        for k, (e, r, d) in enumerate(pooled):
                            with (m.If if k == 0 else m.Elif)(e):
                                m.d.comb += [row.eq(r), dat.eq(d)]
                    for e, r, d in solo:
                        wp = mem.write_port()
                        m.d.comb += [wp.en.eq(e), wp.addr.eq(r), wp.data.eq(d)]
            # read ports: one per reader, or one shared by the readers of a shared group, addressed
            # by the one reading the file now (``{user}_{file}_active``; on a file in parts, per
            # part: bit p, the one reading that part)
            group = self.shared.get((space, False), ())
            on_banks = self.on_banks.get(space, ())
            if on_banks:  # they read through the wide users' bank ports (below)
                group = ()
            pooled = [(user, rows_of) for user, rows_of in reads if user in group]
            ports = ([pooled] if pooled else []) + [[(user, rows_of)] for user, rows_of in reads
                                                    if user not in group and user not in on_banks]
            data_of = {}  # user -> the read data of each bank, per part
            for users in ports:
                outs = []
                for b, parts in enumerate(mems):
                    outs.append([])
                    for p, mem in enumerate(parts):
                        rp = mem.read_port()
                        for k, (user, rows_of) in enumerate(users):
                            if users is pooled:
                                active = getattr(self, f"{self.port_name(user, space)}_active")
                                active = active if np_ == 1 else active[p]
                                if nb > 1 and user not in self.widths:  # one entry: its bank's port only
                                    active = active & (banks_of[user] == b)  # (a DMA's lanes, one a bank)
                                with (m.If if k == 0 else m.Elif)(active):
                                    m.d.comb += rp.addr.eq(in_part(rows_of[b]))
                            else:
                                m.d.comb += rp.addr.eq(in_part(rows_of[b]))
                        outs[b].append(rp.data.as_value())
                data_of.update({user: outs for user, _ in users})

            def psel_of(row, who, en=None, ppb=ppb):  # the part ``row`` is in, a cycle later
                psel = Signal(ppb, name=f"{who}_psel")
                with m.If(1 if en is None else en):  # held while the reads' enable is low, as their data is
                    m.d.sync += psel.eq(part_of(row))
                return psel

            for user, count in self.wide_reads(space).items():  # T reads (or V on the VRF), one enable
                port = getattr(self, f"{self.port_name(user, space)}_wide")
                if space in self.direct:  # port t: bank t, at row addr[t]
                    if count != nb:
                        raise ConfigError(f"RegisterFiles MRF: {count} wide reads on {nb} banks")
                    sharers = [(getattr(self, f"{self.port_name(u, space)}_active"), rows_of) for u, rows_of in reads
                               if u in on_banks]
                    outs = []
                    for t, parts in enumerate(mems):
                        rp = parts[0].read_port()
                        m.d.comb += [rp.en.eq(port.en), rp.addr.eq(port.addr[t]), port.data[t].eq(rp.data.as_value())]
                        for active, rows_of in sharers:  # control runs no mvc while they read
                            with m.If(active):
                                m.d.comb += [rp.en.eq(1), rp.addr.eq(rows_of[t])]
                        outs.append([rp.data.as_value()])
                    data_of.update({u: outs for u in on_banks})
                    continue
                for t in range(count):
                    sel = Signal(sb, name=f"{user}_{name}_wsel_{t}")
                    with m.If(port.en):
                        m.d.sync += sel.eq(bank_of(port.addr[t]))
                    row = row_of(port.addr[t])
                    outs = []
                    for parts in mems:
                        pouts = []
                        for mem in parts:
                            rp = mem.read_port()
                            m.d.comb += [rp.en.eq(port.en), rp.addr.eq(in_part(row))]
                            pouts.append(rp.data.as_value())
                        outs.append(pouts)
                    if np_ > 1:  # one entry: one part, every bank at one row
                        psel = psel_of(row, f"{user}_{name}_wpart_{t}", port.en)
                        outs = [Array(pouts)[psel] for pouts in outs]
                    else:
                        outs = [pouts[0] for pouts in outs]
                    m.d.comb += port.data[t].eq(Array(outs)[sel])
            for user, rows_of in reads:
                port = getattr(self, self.port_name(user, space))
                outs = data_of[user]
                if np_ == 1:
                    outs = [pouts[0] for pouts in outs]
                elif user in self.widths:  # each bank's row may be in a part of its own
                    outs = [Array(pouts)[psel_of(rows_of[b], f"{user}_{name}_rpart_{b}")]
                            for b, pouts in enumerate(outs)]
                else:
                    psel = psel_of(rows_of[0], f"{user}_{name}_rpart")
                    outs = [Array(pouts)[psel] for pouts in outs]
                sel = Signal(sb, name=f"{user}_{name}_rsel")  # the start's bank, a cycle later
                m.d.sync += sel.eq(bank_of(port.raddr))
                if user in self.widths:  # lane k is entry start + k: bank (start + k) mod W
                    for k in range(nb):
                        idx = Signal(max(1, lb), name=f"{user}_{name}_rbank_{k}")
                        m.d.comb += [idx.eq(sel + k), port.rdata[k].eq(Array(outs)[idx])]
                else:
                    m.d.comb += port.rdata.eq(Array(outs)[sel])
            if self.verilog_rams:
                for b, parts in enumerate(mems):
                    for p, mem in enumerate(parts):
                        m.submodules[key(b, p)] = mem.instance()
        return m
