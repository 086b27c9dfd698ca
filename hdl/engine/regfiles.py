"""The on-chip register files: VRF (BFP vectors), MRF (N x N BFP tiles), FVRF (binary32 vectors).

Each file is one ``amaranth.lib.memory.Memory`` of ``layouts.vector_layout`` /
``tile_layout`` / ``fvector_layout`` entries with one write port and one synchronous read port
(data the cycle after the address), exposed as a :func:`file_port_signature` member named after
the file. Depths come from the EngineConfig.

With ``wide_reads=T`` every file also has T more synchronous read ports, the matrix-vector unit's
(one per tile engine: its activation block, weight tile and, for an accumulating ``mvc``, the sum
it continues), exposed as a :func:`read_ports_signature` member ``<file>_wide`` with one enable
(``en`` low holds the data read last). That is ``1 + T`` read ports per file: a hardware cost that
grows with T (a banked layout for large T is not built).
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
    def __init__(self, cfg, *, wide_reads: int = 0):
        self.cfg = check_config(cfg, "RegisterFiles")
        if isinstance(wide_reads, bool) or not isinstance(wide_reads, int) or wide_reads < 0:
            raise ValueError(f"RegisterFiles wide_reads must be a non-negative integer, got {wide_reads!r}")
        self.wide_reads = wide_reads
        members = {space.name.lower(): In(file_port_signature(cfg, space)) for space in Space}
        if wide_reads:
            members.update({f"{space.name.lower()}_wide": In(read_ports_signature(cfg, space, wide_reads))
                            for space in Space})
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        for space in Space:
            name = space.name.lower()
            port = getattr(self, name)
            mem = Memory(shape=file_shape(self.cfg, space), depth=file_depth(self.cfg, space), init=[])
            m.submodules[name] = mem
            wp = mem.write_port()
            rp = mem.read_port()
            m.d.comb += [
                wp.en.eq(port.we), wp.addr.eq(port.waddr), wp.data.eq(port.wdata),
                rp.addr.eq(port.raddr), port.rdata.eq(rp.data),
            ]
            if self.wide_reads:
                wide = getattr(self, f"{name}_wide")
                for t in range(self.wide_reads):
                    extra = mem.read_port()
                    m.d.comb += [extra.en.eq(wide.en), extra.addr.eq(wide.addr[t]), wide.data[t].eq(extra.data)]
        return m
