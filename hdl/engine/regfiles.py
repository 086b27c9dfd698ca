"""The on-chip register files: VRF (BFP vectors), MRF (N x N BFP tiles), FVRF (binary32 vectors).

Each file is one ``amaranth.lib.memory.Memory`` of ``layouts.vector_layout`` /
``tile_layout`` / ``fvector_layout`` entries; each of its users has its own write port and / or
synchronous read port (data the cycle after the address), exposed as a :func:`file_port_signature`
member. Depths come from the EngineConfig. The engine's users and ports (``top.FILE_USERS``):

====  ===============================  ===============================
file  write ports                      read ports
====  ===============================  ===============================
VRF   dma_load, mfu (``qnt``)          dma_store, mfu (``deq``), pool, mvu x T
MRF   dma_load                         dma_store, mvu x T
FVRF  dma_load, mfu, pool, mvu         dma_store, mfu, mvu x T (an accumulating ``mvc``)
====  ===============================  ===============================

The matrix-vector unit's reads are ``wide``: T = ``cfg.tiles`` synchronous read ports per file
(one per tile engine: its activation block, weight tile and the sum it continues) behind one
enable (``en`` low holds the data read last), a :func:`read_ports_signature` member
``{user}_{file}_wide``. Every read port is a copy of the memory in hardware (or one more port of
a multi-ported RAM): VRF ``3 + T``, MRF ``1 + T``, FVRF ``2 + T`` read ports; a banked layout for
large T is not built.
Each DMA lane beyond the first adds a write port (``dma_load{lane}``) and a read port
(``dma_store{lane}``) (``Dma.lane_users``: entries narrower than a memory word move several a
cycle).
"""

from __future__ import annotations

from amaranth.hdl import Module
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from accelml.hdl.isa import Space

from .layouts import check_config, file_depth, fvector_layout, tile_layout, vector_layout

__all__ = ["RegisterFiles", "file_port_signature", "read_ports_signature", "file_shape", "file_addr_bits"]


def file_shape(cfg, space: Space):
    return {Space.VRF: vector_layout, Space.MRF: tile_layout, Space.FVRF: fvector_layout}[space](cfg)


def file_addr_bits(cfg, space: Space) -> int:
    return max(1, ceil_log2(file_depth(cfg, space)))


def read_ports_signature(cfg, space: Space, count: int) -> wiring.Signature:
    """A user's side of ``count`` read ports of one file: ``addr[t]`` -> ``data[t]`` the next cycle
    when ``en`` is high (held while it is low)."""
    aw = file_addr_bits(cfg, space)
    return wiring.Signature({
        "en": Out(1), "addr": Out(data.ArrayLayout(aw, count)),
        "data": In(data.ArrayLayout(file_shape(cfg, space), count)),
    })


def file_port_signature(cfg, space: Space) -> wiring.Signature:
    """A user's side of one file: write (``we``, ``waddr``, ``wdata``) and read (``raddr`` -> ``rdata``)."""
    aw = file_addr_bits(cfg, space)
    shape = file_shape(cfg, space)
    return wiring.Signature({
        "we": Out(1), "waddr": Out(aw), "wdata": Out(shape), "raddr": Out(aw), "rdata": In(shape),
    })


class RegisterFiles(wiring.Component):
    """The three files with one port set per user.

    ``users`` maps a user's name to ``{Space: "r" | "w" | "rw"}``: the user gets a
    :func:`file_port_signature` member ``{user}_{file}`` (``vrf``, ``mrf``, ``fvrf``), backed by a
    write port of that file if it writes and a synchronous read port if it reads, so every user
    reads and writes in the same cycle as the others. The engine keeps users from touching the same
    entries at once (control's hazard check), so two write ports never write one entry in a cycle.
    Without ``users``: one user named ``""`` reading and writing every file (members ``vrf``,
    ``mrf``, ``fvrf``). ``wide`` maps a user to a count T: it also gets a :func:`read_ports_signature`
    member ``{user}_{file}_wide`` of T read ports on every file.
    """

    def __init__(self, cfg, users: dict | None = None, *, wide: dict | None = None):
        self.cfg = check_config(cfg, "RegisterFiles")
        if users is None:
            users = {"": {space: "rw" for space in Space}}
        for user, spaces in users.items():
            for space, mode in spaces.items():
                if not isinstance(space, Space) or mode not in ("r", "w", "rw"):
                    raise ValueError(f"RegisterFiles user {user!r}: {space!r} -> {mode!r} is not Space -> r|w|rw")
        self.users = {u: dict(sp) for u, sp in users.items()}
        self.wide = dict(wide or {})
        for user, count in self.wide.items():
            if isinstance(count, bool) or not isinstance(count, int) or count < 1:
                raise ValueError(f"RegisterFiles wide reads of {user!r} must be a positive integer, got {count!r}")
        members = {self.port_name(user, space): In(file_port_signature(cfg, space))
                   for user, spaces in self.users.items() for space in spaces}
        members.update({f"{self.port_name(user, space)}_wide": In(read_ports_signature(cfg, space, count))
                        for user, count in self.wide.items() for space in Space})
        super().__init__(members)

    @staticmethod
    def port_name(user: str, space: Space) -> str:
        return f"{user}_{space.name.lower()}" if user else space.name.lower()

    def elaborate(self, platform):
        m = Module()
        for space in Space:
            name = space.name.lower()
            mem = Memory(shape=file_shape(self.cfg, space), depth=file_depth(self.cfg, space), init=[])
            m.submodules[name] = mem
            for user, spaces in self.users.items():
                mode = spaces.get(space)
                if mode is None:
                    continue
                port = getattr(self, self.port_name(user, space))
                if "w" in mode:
                    wp = mem.write_port()
                    m.d.comb += [wp.en.eq(port.we), wp.addr.eq(port.waddr), wp.data.eq(port.wdata)]
                if "r" in mode:
                    rp = mem.read_port()
                    m.d.comb += [rp.addr.eq(port.raddr), port.rdata.eq(rp.data)]
            for user, count in self.wide.items():
                port = getattr(self, f"{self.port_name(user, space)}_wide")
                for t in range(count):
                    rp = mem.read_port()
                    m.d.comb += [rp.en.eq(port.en), rp.addr.eq(port.addr[t]), port.data[t].eq(rp.data)]
        return m
