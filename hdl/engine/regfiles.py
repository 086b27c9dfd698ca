"""The on-chip register files: VRF (BFP vectors), MRF (N x N BFP tiles), FVRF (binary32 vectors).

Each file is one ``amaranth.lib.memory.Memory`` of ``layouts.vector_layout`` /
``tile_layout`` / ``fvector_layout`` entries with one write port and one synchronous read port
(data the cycle after the address), exposed as a :func:`file_port_signature` member named after
the file. Depths come from the EngineConfig.
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
    def __init__(self, cfg):
        self.cfg = check_config(cfg, "RegisterFiles")
        super().__init__({
            space.name.lower(): In(file_port_signature(cfg, space)) for space in Space
        })

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
        return m
