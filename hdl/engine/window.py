"""The window address generator shared by ``mvc`` and ``pool``.

A command (``window_cmd_layout``) describes a window walk as the configuration registers do
(``isa.Cfg``): the input image in the VRF (``vbase``, ``in_h`` x ``in_w`` pixels of ``in_cb``
blocks, pixel-major), the kernel (``kh`` x ``kw``, strides, dilations, signed pads: a negative
``pad_t`` moves the window down, as a band of rows needs), the output pixels
``pix0 .. pix0 + npix - 1`` (row-major over ``out_w``) and, for each output pixel, ``nj`` *jobs*
``j`` (an ``mvc``'s output blocks, a ``pool``'s channel blocks). Job ``j`` reads the ``kblk`` input
blocks ``b0(j) .. b0(j) + kblk - 1`` at every tap, where ``b0(j) = ((ob0 + j) // go) * gi`` (an
``mvc``: ``kblk = gi``, the group's input blocks, a dense layer being one group of all ``in_cb``;
a ``pool``: ``gi = go = kblk = 1``, ``ob0 = 0``, so ``b0(j) = j``).

Jobs are numbered pixel-major (``q = pixel * nj + j``) and taken ``lanes`` at a time (a *round*:
lane ``t`` takes job ``q0 + t``); every round steps through the taps in the golden reduction
order (kernel row, kernel column, input block), one step per transfer on ``o``, so a round is
``kh * kw * kblk`` steps. A step carries, per lane, the VRF address of the block (``zero`` set: a
tap outside the input, to be read as a zero block, with ``inpad`` telling whether it lies inside
the input and its explicit pads, for ``count_include_pad``), the job's ``j`` and ``q`` and whether
the lane has a job at all (``active``: the last round may be partial), and for all lanes the step's
index inside the job (``tapk``, the weight tile offset of an ``mvc``), ``first`` / ``last`` step of
the round and ``final`` (the last step of the walk). Taps follow ``golden.ConvGeom.taps`` exactly
(``layout.window_index``; unit-tested against it).

Before walking, the generator divides ``pix0`` by ``out_w`` and ``ob0`` (and the last job's
``ob0 + nj - 1``) by ``go`` with three sequential dividers (``DIV_CYCLES`` cycles, the setup cost
of every command) and checks the functional simulator's group rule: each job's input blocks lie
inside ``in_cb``; a group beyond it makes the walk a single beat with ``fault`` set. A walk with
no job (``npix`` or ``nj`` zero) is a single beat with ``none`` set. Both beats have ``final``.

Addresses are computed incrementally (adds of constants prepared once per command), modulo the
VRF's address width; tap coordinates, which decide ``zero``, are exact.
"""

from __future__ import annotations

from amaranth.hdl import Module, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from .layouts import check_config

__all__ = ["WindowGen", "window_cmd_layout", "window_step_layout", "Divider", "DIV_CYCLES", "COORD_BITS"]

COORD_BITS = 72  # signed tap coordinates: (pix0 + npix) / out_w * stride + kh * dilation + pad, exactly
DIV_BITS = 33
DIV_CYCLES = DIV_BITS + 1


def window_cmd_layout() -> data.StructLayout:
    u32 = unsigned(32)
    return data.StructLayout({
        "vbase": u32, "in_h": u32, "in_w": u32, "in_cb": u32, "kh": u32, "kw": u32,
        "stride_h": u32, "stride_w": u32, "dil_h": u32, "dil_w": u32,
        "pad_t": signed(32), "pad_l": signed(32), "pad_b": signed(32), "pad_r": signed(32),
        "pix0": u32, "npix": u32, "out_w": u32, "nj": u32, "kblk": u32, "gi": u32, "go": u32, "ob0": u32,
    })


def vrf_addr_bits(cfg) -> int:
    return max(1, ceil_log2(cfg.vrf_vectors))


def window_step_layout(cfg, lanes: int) -> data.StructLayout:
    lane = data.StructLayout({
        "addr": unsigned(vrf_addr_bits(cfg)), "zero": 1, "inpad": 1, "active": 1,
        "j": unsigned(32), "q": unsigned(32),
    })
    return data.StructLayout({
        "lane": data.ArrayLayout(lane, lanes), "tapk": unsigned(32),
        "first": 1, "last": 1, "final": 1, "fault": 1, "none": 1,
    })


class Divider(wiring.Component):
    """Sequential unsigned restoring division, ``DIV_BITS``-bit operands: ``start`` (a pulse with
    ``n`` and ``d``) -> ``q = n // d``, ``r = n % d`` with ``done`` high ``DIV_CYCLES`` cycles later
    (until the next ``start``). ``d`` must be non-zero."""

    def __init__(self, width: int = DIV_BITS):
        self.width = width
        super().__init__({"start": In(1), "n": In(width), "d": In(width), "q": Out(width), "r": Out(width),
                          "done": Out(1)})

    def elaborate(self, platform):
        m = Module()
        w = self.width
        n = Signal(w)
        d = Signal(w)
        rem = Signal(w + 1)
        count = Signal(range(w + 2))
        trial = Signal(w + 2)
        m.d.comb += trial.eq((rem << 1 | n[w - 1]) - d)
        with m.If(self.start):
            m.d.sync += [n.eq(self.n), d.eq(self.d), rem.eq(0), count.eq(w), self.done.eq(0), self.q.eq(0)]
        with m.Elif(count != 0):
            m.d.sync += [count.eq(count - 1), n.eq(n << 1)]
            with m.If(~trial[w + 1]):
                m.d.sync += [rem.eq(trial), self.q.eq(self.q << 1 | 1)]
            with m.Else():
                m.d.sync += [rem.eq(rem << 1 | n[w - 1]), self.q.eq(self.q << 1)]
        with m.Elif(~self.start):
            m.d.sync += self.done.eq(1)
        m.d.comb += self.r.eq(rem)
        return m


def _lane_layout(cfg):
    aw = vrf_addr_bits(cfg)
    return data.StructLayout({
        "pi": unsigned(33), "j": unsigned(32), "r": unsigned(32), "b0": unsigned(aw), "ox": unsigned(32),
        "ry": signed(COORD_BITS), "rx": signed(COORD_BITS), "arow": unsigned(aw), "a": unsigned(aw),
        "q": unsigned(32),
    })


class WindowGen(wiring.Component):
    """See the module docstring. ``cmd``: a command; ``o``: its steps, ``lanes`` per beat."""

    def __init__(self, cfg, lanes: int = 1):
        self.cfg = check_config(cfg, "WindowGen")
        if isinstance(lanes, bool) or not isinstance(lanes, int) or not 1 <= lanes <= 4096:
            raise ValueError(f"WindowGen lanes must be an integer in [1, 4096], got {lanes!r}")
        self.lanes = lanes
        super().__init__({
            "cmd": In(stream.Signature(window_cmd_layout())),
            "o": Out(stream.Signature(window_step_layout(cfg, lanes))),
        })

    def elaborate(self, platform):
        m = Module()
        cfg, nl = self.cfg, self.lanes
        aw = vrf_addr_bits(cfg)
        c = Signal(window_cmd_layout())
        lay = _lane_layout(cfg)
        lanes = [Signal(lay, name=f"lane{t}") for t in range(nl)]

        m.submodules.div_pix = div_pix = Divider()
        m.submodules.div_g0 = div_g0 = Divider()
        m.submodules.div_gl = div_gl = Divider()
        start = Signal()
        for dv, (num, den) in ((div_pix, (c.pix0, c.out_w)), (div_g0, (c.ob0, c.go)),
                               (div_gl, (c.ob0 + c.nj - 1, c.go))):
            m.d.comb += [dv.start.eq(start), dv.n.eq(num), dv.d.eq(den)]

        # per-command constants (addresses modulo 2**aw)
        k_col = Signal(aw)  # address step of one output column: stride_w * in_cb
        k_row = Signal(aw)  # of one output row: stride_h * in_w * in_cb
        k_tx = Signal(aw)  # of one kernel column: dil_w * in_cb
        k_ty = Signal(aw)  # of one kernel row: dil_h * in_w * in_cb
        r0 = Signal(32)  # (ob0 % go): the first job's place in its group
        b00 = Signal(aw)  # the first job's first input block
        rx_row = Signal(signed(COORD_BITS))  # rx of column 0: -pad_l

        def inc(s):
            """The lane state of the next job (pixel-major order), combinationally."""
            n_ = Signal(lay)
            m.d.comb += n_.eq(s)
            m.d.comb += n_.q.eq(s.q + 1)
            with m.If(s.j + 1 == c.nj):
                m.d.comb += [n_.j.eq(0), n_.r.eq(r0), n_.b0.eq(b00), n_.pi.eq(s.pi + 1)]
                with m.If(s.ox + 1 == c.out_w):
                    m.d.comb += [n_.ox.eq(0), n_.ry.eq(s.ry + c.stride_h), n_.rx.eq(rx_row),
                                 n_.arow.eq(s.arow + k_row), n_.a.eq(s.arow + k_row)]
                with m.Else():
                    m.d.comb += [n_.ox.eq(s.ox + 1), n_.rx.eq(s.rx + c.stride_w), n_.a.eq(s.a + k_col)]
            with m.Else():
                m.d.comb += n_.j.eq(s.j + 1)
                with m.If(s.r + 1 == c.go):
                    m.d.comb += [n_.r.eq(0), n_.b0.eq(s.b0 + c.gi)]
                with m.Else():
                    m.d.comb += n_.r.eq(s.r + 1)
            return n_

        # the first lane's state at the start of the walk
        s0 = Signal(lay)
        oy0 = div_pix.q
        ox0 = div_pix.r
        ry0 = Signal(signed(COORD_BITS))
        m.d.comb += [
            ry0.eq(oy0 * c.stride_h - c.pad_t),
            s0.pi.eq(0), s0.j.eq(0), s0.r.eq(div_g0.r), s0.b0.eq(div_g0.q * c.gi), s0.ox.eq(ox0),
            s0.ry.eq(ry0), s0.rx.eq(ox0 * c.stride_w - c.pad_l),
            s0.arow.eq((ry0 * c.in_w - c.pad_l) * c.in_cb),
            s0.a.eq((ry0 * c.in_w - c.pad_l) * c.in_cb + ox0 * k_col),
            s0.q.eq(0),
        ]

        # the next round's lanes from a first lane's state
        first_in = Signal(lay)
        chain = [first_in]
        for _ in range(nl - 1):
            chain.append(inc(chain[-1]))
        after_last = inc(lanes[nl - 1])

        # tap state, shared by the lanes
        ky, kx, kb = Signal(32), Signal(32), Signal(32)
        dy, dx = Signal(signed(COORD_BITS)), Signal(signed(COORD_BITS))
        da_row, da = Signal(aw), Signal(aw)
        tapk = Signal(32)
        last_k = kb + 1 == c.kblk
        last_x = kx + 1 == c.kw
        last_y = ky + 1 == c.kh
        round_last = last_k & last_x & last_y
        round_first = (ky == 0) & (kx == 0) & (kb == 0)
        walk_done = after_last.pi >= c.npix

        p = self.o.payload
        for t in range(nl):
            s, lp = lanes[t], p.lane[t]
            iy = Signal(signed(COORD_BITS + 1), name=f"iy{t}")
            ix = Signal(signed(COORD_BITS + 1), name=f"ix{t}")
            m.d.comb += [iy.eq(s.ry + dy), ix.eq(s.rx + dx)]
            inside = (iy >= 0) & (iy < c.in_h) & (ix >= 0) & (ix < c.in_w)
            inpad = ((iy >= -c.pad_t) & (iy < c.in_h + c.pad_b) & (ix >= -c.pad_l) & (ix < c.in_w + c.pad_r))
            m.d.comb += [lp.addr.eq(c.vbase + s.a + da + s.b0 + kb), lp.zero.eq(~inside), lp.inpad.eq(inpad),
                         lp.active.eq(s.pi < c.npix), lp.j.eq(s.j), lp.q.eq(s.q)]
        m.d.comb += [p.tapk.eq(tapk), p.first.eq(round_first), p.last.eq(round_last),
                     p.final.eq(round_last & walk_done)]

        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.cmd.ready.eq(1)
                with m.If(self.cmd.valid):
                    m.d.sync += c.eq(self.cmd.payload)
                    m.next = "START"
            with m.State("START"):
                m.d.comb += start.eq(1)
                m.d.sync += [k_col.eq(c.stride_w * c.in_cb), k_row.eq(c.stride_h * c.in_w * c.in_cb),
                             k_tx.eq(c.dil_w * c.in_cb), k_ty.eq(c.dil_h * c.in_w * c.in_cb),
                             rx_row.eq(-c.pad_l)]
                m.next = "DIVIDE"
            with m.State("DIVIDE"):
                with m.If(div_pix.done & div_g0.done & div_gl.done):
                    m.d.sync += [r0.eq(div_g0.r), b00.eq(div_g0.q * c.gi)]
                    with m.If((c.nj != 0) & ((div_gl.q + 1) * c.gi > c.in_cb)):
                        m.next = "FAULT"
                    with m.Elif((c.nj == 0) | (c.npix == 0)):
                        m.next = "NONE"
                    with m.Else():
                        m.next = "PREP"
            with m.State("PREP"):  # the first round's lanes
                m.d.comb += first_in.eq(s0)
                m.d.sync += [lanes[t].eq(chain[t]) for t in range(nl)]
                m.d.sync += [ky.eq(0), kx.eq(0), kb.eq(0), dy.eq(0), dx.eq(0), da_row.eq(0), da.eq(0), tapk.eq(0)]
                m.next = "WALK"
            with m.State("WALK"):
                m.d.comb += [self.o.valid.eq(1), first_in.eq(after_last)]
                with m.If(self.o.ready):
                    m.d.sync += tapk.eq(tapk + 1)
                    with m.If(~last_k):
                        m.d.sync += kb.eq(kb + 1)
                    with m.Elif(~last_x):
                        m.d.sync += [kb.eq(0), kx.eq(kx + 1), dx.eq(dx + c.dil_w), da.eq(da + k_tx)]
                    with m.Elif(~last_y):
                        m.d.sync += [kb.eq(0), kx.eq(0), dx.eq(0), ky.eq(ky + 1), dy.eq(dy + c.dil_h),
                                     da_row.eq(da_row + k_ty), da.eq(da_row + k_ty)]
                    with m.Else():
                        m.d.sync += [kb.eq(0), kx.eq(0), ky.eq(0), dx.eq(0), dy.eq(0), da_row.eq(0), da.eq(0),
                                     tapk.eq(0)]
                        m.d.sync += [lanes[t].eq(chain[t]) for t in range(nl)]
                        with m.If(walk_done):
                            m.next = "IDLE"
            with m.State("FAULT"):
                m.d.comb += [self.o.valid.eq(1), p.fault.eq(1), p.final.eq(1)]
                with m.If(self.o.ready):
                    m.next = "IDLE"
            with m.State("NONE"):
                m.d.comb += [self.o.valid.eq(1), p.none.eq(1), p.final.eq(1)]
                with m.If(self.o.ready):
                    m.next = "IDLE"
        return m
