"""2-D strided DMA between the external-memory port and the on-chip files.

A command (``layouts.dma_cmd_layout``, already range-checked by the control unit) moves ``rows`` x
``length`` entries between on-chip entry ``base + r*chip_stride + i`` and external bytes
``addr + r*mem_stride + i*item`` in the encodings of ``accelml.sim.memory`` (BFP vectors, tiles
of N vectors, binary32 vectors). Completion is one transfer on ``done`` carrying
``ErrorCode.NONE``, or ``BAD_BFP`` / ``BAD_FP`` for a load whose data the encodings refuse (the
entry is then not written and the command ends there; entries before it, also those of the same
cycle, are written).

Both directions move a memory word per cycle. ``layouts.dma_lanes`` entries of a space (as many as
a word's bytes complete, at most ``layouts.dma_max_lanes``: with shared file ports, as many as the
file has banks) are moved per cycle through that many file ports, ``{space}`` (lane 0) and
``{space}{lane}``: a load's write ports, a store's read ports (:meth:`Dma.lane_users` names the
extra ones for ``RegisterFiles``). With shared file ports the lanes are users of the banks' shared
ports (``top.file_plan``): a cycle's entries are consecutive, of one row (the gearbox takes a row's
bytes only once the row before is written; a store reads within a row), each in a bank of its own.

A load into a banked MRF with ``copies`` (docs/isa.md) writes each entry's copies in its cycle:
``mrf_copies`` is the mask of their offsets (bit ``k * length`` for ``k < copies``), which the
register files apply to the entry's write.

Loads: a request generator issues the word reads covering each row (as fast as the port accepts
them; the memory model bounds the requests in flight); a byte gearbox takes the row's bytes from
each returned word (a whole word per cycle, while less than an item is left after the cycle's
writes) and writes, in the same cycle, every whole item it holds, up to the lanes, rows followed
in order. Stores: each cycle the row's next entries are read, as many as the lanes and as fit the
byte buffer (``layouts.dma_store_room``, counting the entries read the cycle before), encoded into
the buffer the cycle after, and written as masked words, one a cycle whenever the buffer holds a
word (or the row's last bytes), so unaligned rows and partial words need no read-modify-write.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Instance, Module, Mux, Signal, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from accelml.hdl.isa import Space

from .layouts import (
    check_config,
    dma_cmd_layout,
    dma_lanes,
    dma_max_lanes,
    dma_store_room,
    item_bytes,
    mem_port_signature,
    word_bytes,
)
from .regfiles import file_port_signature
from .status import ErrorCode, report_done

__all__ = ["Dma", "decode_vector", "encode_vector", "decode_fvector", "byte_shift", "SHIFT_VERILOG"]


# The gearbox's byte shift in the emitted Verilog (``Dma(verilog_shifts=True)``): ``y`` is ``a``
# shifted by ``s`` whole bytes (toward the most significant end with ``LEFT``), ``OUT`` bits of it.
SHIFT_VERILOG = """
module accelml_byte_shift #(parameter IN = 8, parameter OUT = 8, parameter SW = 1, parameter LEFT = 0) (
    input wire [IN-1:0] a,
    input wire [SW-1:0] s,
    output wire [OUT-1:0] y
);
    /* verilator lint_off WIDTHEXPAND */
    /* verilator lint_off WIDTHTRUNC */
    // the operand is extended to, and the result cut at, the wider of IN and OUT: Verilog's sizing
    generate
        if (LEFT) begin : l
            assign y = a << {s, 3'b000};
        end else begin : r
            assign y = a >> {s, 3'b000};
        end
    endgenerate
    /* verilator lint_on WIDTHTRUNC */
    /* verilator lint_on WIDTHEXPAND */
endmodule
"""


def byte_shift(m: Module, value, amount, width: int, *, left: bool, verilog: bool = False):
    """``width`` bits of ``value`` shifted by ``amount`` whole bytes: ``(value << 8 * amount)[:width]``
    with ``left``, else ``(value >> 8 * amount)[:width]``; with ``verilog``, an instance of
    ``accelml_byte_shift`` (:data:`SHIFT_VERILOG`) added to ``m``.

    Amaranth's check for combinational cycles walks, for a shift by a variable amount, every bit of
    the operand from every bit of the unsliced result (``len(value) + 2 ** len(amount) - 1`` bits):
    the gearbox's shifts were 2.1 G of the 2.2 G edges it walked in the `a10` engine, 90 % of its
    emission. It does not look inside an instance; Verilator and Yosys build the same shift from
    either form."""
    if not verilog:
        return ((value << amount * 8) if left else (value >> amount * 8))[:width]
    out = Signal(width)
    m.submodules += Instance("accelml_byte_shift", p_IN=len(value), p_OUT=width, p_SW=len(amount),
                             p_LEFT=int(left), i_a=value, i_s=amount, o_y=out)
    return out


def decode_vector(cfg, raw):
    """Bytes of one BFP vector (``raw``, ``8 * bfp_vector_bytes`` bits) -> (entry bits, bad)."""
    n, m, mb, e = cfg.native_dim, cfg.mantissa_bits, cfg.mantissa_bytes, cfg.exponent_bits
    mants, bad = [], Const(0, 1)
    for j in range(n):
        word = raw[8 * mb * j: 8 * mb * (j + 1)]
        mag, sign = word[:8 * mb - 1], word[8 * mb - 1]
        if 8 * mb - 1 > m:
            bad = bad | (mag[m:] != 0)
        mants.append(Mux(sign, -mag[:m], mag[:m])[:m + 1])
    field = raw[8 * mb * n: 8 * mb * n + 8]
    bad = bad | (field >= (1 << e) - 1)
    return Cat(*mants, field[:e]), bad


def encode_vector(cfg, bits):
    """Entry bits of one BFP vector -> its ``8 * bfp_vector_bytes`` bits of memory encoding."""
    n, m, mb, e = cfg.native_dim, cfg.mantissa_bits, cfg.mantissa_bytes, cfg.exponent_bits
    words = []
    for j in range(n):
        mant = bits[(m + 1) * j: (m + 1) * (j + 1)].as_signed()
        sign = mant < 0
        mag = Mux(sign, -mant, mant)[:m]
        words.append(Cat(mag, Const(0, 8 * mb - 1 - m), sign))
    field = bits[(m + 1) * n: (m + 1) * n + e]
    return Cat(*words, field, Const(0, 8 - e))


def decode_fvector(cfg, raw):
    """Bytes of one binary32 vector -> (entry bits flushed to zero, bad: a NaN or infinity)."""
    vals, bad = [], Const(0, 1)
    for j in range(cfg.native_dim):
        v = raw[32 * j: 32 * (j + 1)]
        exp = v[23:31]
        bad = bad | (exp == 0xFF)
        vals.append(Mux(exp == 0, 0, v))
    return Cat(*vals), bad


def space_lanes(cfg) -> dict:
    """Entries of each file a DMA moves per cycle (``layouts.dma_lanes`` of the file's entries)."""
    return {space: dma_lanes(word_bytes(cfg), item_bytes(cfg, space), dma_max_lanes(cfg, space)) for space in Space}


def lane_users(cfg, user: str, *, load: bool, store: bool) -> dict:
    """The register-file users (``RegisterFiles``) of a DMA's extra lanes, named after ``user``
    (``{user}{lane}``: one port of ``{space}{lane}`` each, a write port for a load, a read port for a
    store); lane 0 is ``user``'s own."""
    lanes = space_lanes(cfg)
    mode = ("r" if store else "") + ("w" if load else "")
    return {f"{user}{j}": {space: mode for space in Space if lanes[space] > j} for j in range(1, max(lanes.values()))}


class Dma(wiring.Component):
    """``load`` / ``store``: which commands this instance executes (the engine builds one of each,
    so a load and a store run side by side; the other kind of command must not be sent).

    ``want`` / ``grant`` share the memory port between instances at transfer granularity: ``want``
    is raised from ``SETUP`` to the end of the transfer, and the transfer starts (leaves ``SETUP``)
    only in a cycle where ``grant`` is set. ``grant`` is 1 when left unconnected."""

    def __init__(self, cfg, *, load: bool = True, store: bool = True, verilog_shifts: bool = False):
        self.cfg = check_config(cfg, "Dma")
        self.verilog_shifts = bool(verilog_shifts)
        if not (load or store):
            raise ValueError("Dma must execute loads, stores or both")
        self.load, self.store = load, store
        self.max_lanes = {space: dma_max_lanes(cfg, space) for space in Space}
        self.lanes = space_lanes(cfg)
        super().__init__({
            "cmd": In(stream.Signature(dma_cmd_layout(cfg))),
            "done": Out(stream.Signature(ErrorCode)),
            "mem": Out(mem_port_signature(cfg)),
            **{self.port_name(space, j): Out(file_port_signature(cfg, space))
               for space in Space for j in range(self.lanes[space])},
            "busy_load": Out(1),
            "busy_store": Out(1),
            "want": Out(1),
            "grant": In(1, init=1),
            # a load into a banked MRF: bit d set where the entry written and its copies lie, d
            # entries on (the command's copies, a row length apart; bit 0: the entry itself)
            **({"mrf_copies": Out(cfg.tiles)} if cfg.mrf_banked and load else {}),
        })

    @staticmethod
    def port_name(space: Space, lane: int = 0) -> str:
        """The member of ``space``'s port of write lane ``lane`` (lane 0 also reads, for stores)."""
        return space.name.lower() + (str(lane) if lane else "")

    def _port(self, space: Space, lane: int = 0):
        return getattr(self, self.port_name(space, lane))

    def lane_users(self, user: str) -> dict:
        """The register-file users (``RegisterFiles``) of this DMA's extra lanes: :func:`lane_users`."""
        return lane_users(self.cfg, user, load=self.load, store=self.store)

    def connect_lanes(self, m, files, user: str) -> None:
        """Wire the extra write lanes to ``files`` (a ``RegisterFiles`` built with :meth:`lane_users`)."""
        for name, spaces in self.lane_users(user).items():
            lane = int(name[len(user):])
            for space in spaces:
                wiring.connect(m, self._port(space, lane), getattr(files, files.port_name(name, space)))

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        w = word_bytes(cfg)
        lw = ceil_log2(w)
        n = cfg.native_dim
        vb, tb, fb = (item_bytes(cfg, s) for s in Space)
        lanes = max(self.lanes.values())
        # buffer capacity in bytes: a load's gearbox (an item and a word), a store's room
        cap = max(max(vb, tb, fb) + w, *(dma_store_room(w, item_bytes(cfg, s), self.max_lanes[s]) for s in Space))
        fill_shape = unsigned(ceil_log2(cap + 1))

        c = Signal(dma_cmd_layout(cfg))
        item = Signal(range(max(vb, tb, fb) + 1))
        m.d.comb += item.eq(Mux(c.space == Space.VRF, vb, Mux(c.space == Space.MRF, tb, fb)))
        row_bytes = Signal(32)
        m.d.comb += row_bytes.eq(c.length * item)
        if cfg.mrf_banked and self.load:  # control checked copies * length <= T
            nt = cfg.tiles
            m.d.comb += self.mrf_copies.eq(Cat(*(Cat(*((c.copies > k) & (c.length * k == d) for k in range(nt))).any()
                                                 for d in range(nt))))
        code = Signal(ErrorCode)
        def shift(value, amount, width, *, left):
            return byte_shift(m, value, amount, width, left=left, verilog=self.verilog_shifts)

        def low_bytes(value, count):
            """``value``'s bytes below ``count``, the others zero."""
            ones = Const((1 << len(value)) - 1, len(value))
            return value & ~shift(ones, count, len(value), left=True)

        # -- load: request generator -----------------------------------------------------------
        g_active = Signal()
        g_rows = Signal(16)
        g_row_addr = Signal(c.addr.shape().width + 1)
        g_waddr = Signal(self.mem.req.payload.addr.shape())
        g_wlast = Signal.like(g_waddr)
        # -- load: consumer (gearbox) and entry writer ------------------------------------------
        buf = Signal(8 * cap)
        fill = Signal(fill_shape)
        c_rows = Signal(16)
        c_row_addr = Signal.like(g_row_addr)
        c_rem = Signal(32)
        c_first = Signal()
        e_i = Signal(16)
        e_row = Signal(32)
        e_left = Signal(33)
        # -- store ------------------------------------------------------------------------------
        s_i = Signal(16)
        s_row = Signal(32)
        s_read = Signal()  # every entry of the current row is read
        p_n = Signal(range(max(self.lanes.values()) + 1))  # entries read last cycle (their data out now)
        o_rows = Signal(16)
        o_row_addr = Signal.like(g_row_addr)
        o_pos = Signal(range(w))
        o_waddr = Signal.like(g_waddr)

        def items_bytes(count):
            """Bytes of ``count`` (at most ``lanes``) entries of the command's space, from constants."""
            out = Signal(range(lanes * max(vb, tb, fb) + 1))
            with m.Switch(c.space):
                for space in Space:
                    with m.Case(space):
                        with m.Switch(count):
                            for j in range(1, self.lanes[space] + 1):
                                with m.Case(j):
                                    m.d.comb += out.eq(j * item_bytes(cfg, space))
            return out

        def row_words(addr):
            return addr >> lw, (addr + row_bytes - 1) >> lw

        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.cmd.ready.eq(1)
                with m.If(self.cmd.valid):
                    p = self.cmd.payload
                    m.d.sync += [c.eq(p), code.eq(ErrorCode.NONE)]
                    m.next = "SETUP"
            with m.State("SETUP"):  # the command's derived figures (item, row_bytes) are valid now
                m.d.comb += self.want.eq(1)
                first, last = row_words(c.addr)
                m.d.sync += [
                    g_active.eq(~c.store), g_rows.eq(c.rows), g_row_addr.eq(c.addr),
                    g_waddr.eq(first), g_wlast.eq(last),
                    buf.eq(0), fill.eq(0), c_rows.eq(c.rows), c_row_addr.eq(c.addr), c_rem.eq(row_bytes),
                    c_first.eq(1), e_i.eq(0), e_row.eq(c.base), e_left.eq(c.rows * c.length),
                    s_i.eq(0), s_row.eq(c.base), s_read.eq(0), p_n.eq(0), o_rows.eq(c.rows),
                    o_row_addr.eq(c.addr), o_pos.eq(c.addr[:lw]), o_waddr.eq(first),
                ]
                with m.If(self.grant):  # the memory port is this instance's until DONE
                    with m.If(c.store):
                        m.next = "STORE"
                    with m.Else():
                        m.next = "LOAD"
            with m.State("LOAD"):
                if self.load:  # (left empty in an instance without loads)
                    m.d.comb += [self.busy_load.eq(1), self.want.eq(1)]
                    req = self.mem.req
                    # requests
                    # (a read carries no data: zeros, driven here so that a load-only instance drives
                    # every bit of its port from this process, not from a bare constant)
                    m.d.comb += [req.valid.eq(g_active), req.payload.addr.eq(g_waddr), req.payload.write.eq(0),
                                 req.payload.data.eq(0), req.payload.mask.eq(0)]
                    with m.If(req.valid & req.ready):
                        m.d.sync += g_waddr.eq(g_waddr + 1)
                        with m.If(g_waddr == g_wlast):
                            nxt = g_row_addr + c.mem_stride
                            first, last = row_words(nxt)
                            m.d.sync += [g_rows.eq(g_rows - 1), g_row_addr.eq(nxt), g_waddr.eq(first), g_wlast.eq(last)]
                            with m.If(g_rows == 1):
                                m.d.sync += g_active.eq(0)
                    # entries out of the gearbox: up to `lanes` whole items a cycle, one write port each
                    pos = [(e_i, e_row)]  # lane j's (index in its row, row's first entry)
                    for _ in range(lanes):
                        i, r = pos[-1]
                        wrap = i + 1 == c.length
                        pos.append((Mux(wrap, 0, i + 1)[:16], Mux(wrap, r + c.chip_stride, r)[:32]))
                    fault = Signal()
                    nemit = Signal(range(lanes + 1))
                    for space in Space:
                        k_s, it = self.lanes[space], item_bytes(cfg, space)
                        sel = c.space == space
                        bad_so_far = Const(0, 1)
                        for j in range(k_s):
                            raw = buf[8 * it * j: 8 * it * (j + 1)]
                            if space == Space.VRF:
                                bits, bad = decode_vector(cfg, raw)
                            elif space == Space.MRF:
                                rows_ = [decode_vector(cfg, raw[8 * vb * q: 8 * vb * (q + 1)]) for q in range(n)]
                                bits = Cat(*(b for b, _ in rows_))
                                bad = Const(0, 1)
                                for _, b in rows_:
                                    bad = bad | b
                            else:
                                bits, bad = decode_fvector(cfg, raw)
                            here = fill >= it * (j + 1)
                            bad_so_far = bad_so_far | bad
                            port = self._port(space, j)
                            i, r = pos[j]
                            m.d.comb += [port.waddr.eq(r + i), port.wdata.eq(bits),
                                         port.we.eq(sel & here & ~bad_so_far)]
                            with m.If(sel & here):
                                m.d.comb += nemit.eq(j + 1)
                                with m.If(bad):
                                    m.d.comb += fault.eq(1)
                    emit_bytes = items_bytes(nemit)
                    with m.If(fault):
                        m.d.sync += code.eq(Mux(c.space == Space.FVRF, ErrorCode.BAD_FP, ErrorCode.BAD_BFP))
                        m.next = "DONE"
                    with m.Elif(nemit != 0):
                        m.d.sync += e_left.eq(e_left - nemit)
                        with m.Switch(nemit):
                            for j in range(1, lanes + 1):
                                with m.Case(j):
                                    m.d.sync += [e_i.eq(pos[j][0]), e_row.eq(pos[j][1])]
                    with m.If(e_left == 0):
                        m.next = "DONE"
                    # bytes into the gearbox
                    fill_after = Signal(fill_shape)
                    m.d.comb += fill_after.eq(fill - emit_bytes)
                    take = Signal()
                    m.d.comb += [take.eq((fill_after < item) & (c_rem != 0) & (e_left != 0)),
                                 self.mem.resp.ready.eq(take)]
                    off = Signal(range(w))
                    m.d.comb += off.eq(Mux(c_first, c_row_addr[:lw], 0))
                    k = Signal(range(w + 1))
                    m.d.comb += k.eq(Mux(c_rem < w - off, c_rem, w - off))
                    piece = Signal(8 * w)
                    word = shift(self.mem.resp.payload, off, 8 * w, left=False)
                    m.d.comb += piece.eq(low_bytes(word, k))
                    shifted = shift(buf, emit_bytes, 8 * cap, left=False)
                    got = take & self.mem.resp.valid
                    m.d.sync += [buf.eq(shifted | Mux(got, shift(piece, fill_after, 8 * cap, left=True), 0)),
                                 fill.eq(fill_after + Mux(got, k, 0))]
                    with m.If(got):
                        m.d.sync += [c_rem.eq(c_rem - k), c_first.eq(0)]
                        with m.If((c_rem == k) & (c_rows != 1)):
                            m.d.sync += [c_rows.eq(c_rows - 1), c_row_addr.eq(c_row_addr + c.mem_stride),
                                         c_rem.eq(row_bytes), c_first.eq(1)]
            with m.State("STORE"):
                if self.store:  # (left empty in an instance without stores)
                    m.d.comb += [self.busy_store.eq(1), self.want.eq(1)]
                    req = self.mem.req
                    o_buf = buf  # the load's gearbox register serves the store
                    o_fill = fill
                    pend = items_bytes(p_n)
                    s_pushed = Signal()
                    m.d.comb += s_pushed.eq(s_read & (p_n == 0))
                    # the entries read last cycle, encoded (p_n of them)
                    data = Signal(8 * lanes * max(vb, tb, fb))
                    nread = Signal(range(lanes + 1))
                    for space in Space:
                        k_s, it = self.lanes[space], item_bytes(cfg, space)
                        raws = []
                        for j in range(k_s):
                            port = self._port(space, j)
                            m.d.comb += port.raddr.eq(s_row + s_i + j)
                            if space == Space.VRF:
                                raws.append(encode_vector(cfg, port.rdata.as_value()))
                            elif space == Space.MRF:
                                raws.append(Cat(*(encode_vector(cfg, port.rdata[q].as_value()) for q in range(n))))
                            else:
                                raws.append(port.rdata.as_value())
                        with m.If(c.space == space):
                            m.d.comb += data.eq(Cat(*raws))
                            # entries read this cycle: the row's next ones that fit the buffer
                            for j in range(k_s):
                                with m.If(~s_read & (s_i + j < c.length)
                                          & (o_fill + pend + it * (j + 1)
                                             <= dma_store_room(w, it, self.max_lanes[space]))):
                                    m.d.comb += nread.eq(j + 1)
                    send = Signal()
                    m.d.comb += send.eq((o_fill != 0) & ((o_pos + o_fill >= w) | s_pushed))
                    used = Signal(range(w + 1))
                    m.d.comb += used.eq(Mux(o_pos + o_fill >= w, w - o_pos, o_fill))
                    m.d.comb += [
                        req.valid.eq(send), req.payload.write.eq(1), req.payload.addr.eq(o_waddr),
                        req.payload.data.eq(shift(o_buf, o_pos, 8 * w, left=True)),
                        req.payload.mask.eq((~(Const((1 << w) - 1, w) << used)[:w] << o_pos)[:w]),
                    ]
                    sent = Signal(range(w + 1))
                    m.d.comb += sent.eq(Mux(send & req.ready, used, 0))
                    with m.If(send & req.ready):
                        m.d.sync += [o_pos.eq(0), o_waddr.eq(o_waddr + 1)]
                    kept = Signal(fill_shape)
                    m.d.comb += kept.eq(o_fill - sent)
                    pushed = low_bytes(data, pend)
                    m.d.sync += [o_buf.eq(shift(o_buf, sent, 8 * cap, left=False)
                                          | shift(pushed, kept, 8 * cap, left=True)),
                                 o_fill.eq(kept + pend), p_n.eq(nread), s_i.eq(s_i + nread)]
                    with m.If(~s_read & (s_i + nread == c.length)):
                        m.d.sync += [s_read.eq(1), s_row.eq(s_row + c.chip_stride)]
                    with m.If(s_pushed & (o_fill == 0)):  # row written: the next row, or the end
                        nxt = o_row_addr + c.mem_stride
                        m.d.sync += [o_rows.eq(o_rows - 1), o_row_addr.eq(nxt), o_pos.eq(nxt[:lw]),
                                     o_waddr.eq(nxt >> lw), s_i.eq(0), s_read.eq(0)]
                        with m.If(o_rows == 1):
                            m.next = "DONE"
            with m.State("DONE"):
                report_done(m, self.done, code)
        return m
