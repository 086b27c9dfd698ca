"""The on-chip register files: VRF (BFP vectors), MRF (N x N BFP tiles), FVRF (binary32 vectors).

Each file is one ``amaranth.lib.memory.Memory`` of ``layouts.vector_layout`` /
``tile_layout`` / ``fvector_layout`` entries; each of its users has its own write port and / or
synchronous read port (data the cycle after the address), exposed as a :func:`file_port_signature`
member. Depths come from the EngineConfig. The engine's users and ports (``top.FILE_USERS``):

====  ===============================  ===============================
file  write ports                      read ports
====  ===============================  ===============================
VRF   dma_load, mfu (``qnt``)          dma_store, mfu (``deq``)
MRF   dma_load                         dma_store
FVRF  dma_load, mfu                    dma_store, mfu, mfu_b (``vop``'s second operand)
====  ===============================  ===============================

(the MVU, when built, adds VRF, MRF and FVRF read ports and an FVRF write port).
"""

from __future__ import annotations

from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from accelml.hdl.isa import Space

from .layouts import check_config, file_depth, fvector_layout, tile_layout, vector_layout

__all__ = ["RegisterFiles", "file_port_signature", "file_shape"]


def file_shape(cfg, space: Space):
    return {Space.VRF: vector_layout, Space.MRF: tile_layout, Space.FVRF: fvector_layout}[space](cfg)


def file_port_signature(cfg, space: Space) -> wiring.Signature:
    """A user's side of one file: write (``we``, ``waddr``, ``wdata``) and read (``raddr`` -> ``rdata``)."""
    aw = max(1, ceil_log2(file_depth(cfg, space)))
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
    ``mrf``, ``fvrf``).
    """

    def __init__(self, cfg, users: dict | None = None):
        self.cfg = check_config(cfg, "RegisterFiles")
        if users is None:
            users = {"": {space: "rw" for space in Space}}
        for user, spaces in users.items():
            for space, mode in spaces.items():
                if not isinstance(space, Space) or mode not in ("r", "w", "rw"):
                    raise ValueError(f"RegisterFiles user {user!r}: {space!r} -> {mode!r} is not Space -> r|w|rw")
        self.users = {u: dict(sp) for u, sp in users.items()}
        super().__init__({
            self.port_name(user, space): In(file_port_signature(cfg, space))
            for user, spaces in self.users.items() for space in spaces
        })

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
        return m
