"""One tile engine of the matrix-vector unit: N dot-product units of N lanes, accumulating in binary32.

Each accepted step carries one N x N weight tile (N BFP row blocks, each with its own shared
exponent) and one BFP activation block. For every row ``j`` the engine computes, exactly as
``accelml.sim.bfp.block_matmul`` does for one activation vector and N weight rows::

    d_j    = sum_i w_mant[j][i] * a_mant[i]                  (exact integer)
    s_j    = (w_exp[j] - (M - 1)) + (a_exp - (M - 1))
    term_j = to_internal(d_j * 2**s_j)                        (RNE, FTZ, overflow flag)
    acc_j  = to_internal((init_j if first else acc_j) + term_j)

and after a step flagged ``last`` it emits ``acc_0 .. acc_{N-1}`` (binary32 bit patterns) with a
sticky ``overflow`` flag: set when any term or sum of any row overflowed since the step flagged
``first``. The values of an overflowed row are unspecified; the other rows stay exact.
``init_j`` (binary32 bit patterns, taken with the step flagged ``first``) is the value each sum
starts from: +0 for a fresh sum, or a sum to continue (an accumulating ``mvc``: the sum is then
``((init + t0) + t1) + ...``, exactly ``block_matmul``'s ``acc`` order). It must be a finite
internal-format value (no subnormal, no Inf/NaN), as the FVRF holds.

Input contract: mantissas in ``[-(2**M - 1), 2**M - 1]``; exponents are raw unbiased signed
integers, normally in ``[cfg.exp_min, cfg.exp_max]`` (the datapath computes any value the
``signed(E + 1)`` field holds correctly). Steps between ``first`` and ``last`` accumulate.

Pipeline: input register, dot products, conversion, accumulation, output register. One step per
cycle; a result leaves 4 cycles after its last step is accepted. Back-pressure on ``result``
stalls the engine only when a finished result would overwrite one not yet taken. A stage's data
registers load only with a valid step and hold otherwise (operand isolation: an idle engine does
not toggle its datapath, and a cycle simulator skips its arithmetic).
"""

from __future__ import annotations

from amaranth.hdl import Cat, Instance, Module, Mux, Shape, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from .config import EngineConfig
from .fp32 import F32Add, ScaledIntToF32

__all__ = ["TileEngine", "step_layout", "result_layout", "MAX_NATIVE_DIM", "DOT_VERILOG"]

# The N-term dot product of each row is one combinational adder tree; beyond this it needs
# pipelining this engine does not have.
MAX_NATIVE_DIM = 64


def _check_cfg(cfg) -> EngineConfig:
    if not isinstance(cfg, EngineConfig):
        raise TypeError(f"TileEngine cfg must be an EngineConfig, got {type(cfg).__name__}")
    if cfg.native_dim > MAX_NATIVE_DIM:
        raise ValueError(
            f"TileEngine supports cfg.native_dim up to {MAX_NATIVE_DIM} (one unpipelined adder tree "
            f"per row), got native_dim={cfg.native_dim}"
        )
    if cfg.internal_format != "fp32-ftz":
        raise ValueError(f"TileEngine implements internal_format 'fp32-ftz', got {cfg.internal_format!r}")
    return cfg


def mantissa_shape(cfg: EngineConfig):
    return signed(cfg.mantissa_bits + 1)


def exponent_shape(cfg: EngineConfig):
    return signed(cfg.exponent_bits + 1)


def step_layout(cfg: EngineConfig) -> data.StructLayout:
    """Payload of one input step (fields from the least significant bit up, in this order).

    ``w_mant[j][i]``: weight row ``j``, element ``i``; ``w_exp[j]``: shared exponent of row
    ``j``; ``a_mant[i]``, ``a_exp``: the activation block; ``first``/``last``: start the sums from
    ``init`` / emit them after this step; ``init[j]``: the binary32 value row ``j``'s sum starts
    from (read with ``first`` only; +0 for a fresh sum).
    """
    n = cfg.native_dim
    mant, exp = mantissa_shape(cfg), exponent_shape(cfg)
    return data.StructLayout({
        "w_mant": data.ArrayLayout(data.ArrayLayout(mant, n), n),
        "w_exp": data.ArrayLayout(exp, n),
        "a_mant": data.ArrayLayout(mant, n),
        "a_exp": exp,
        "first": 1,
        "last": 1,
        "init": data.ArrayLayout(32, n),
    })


def result_layout(cfg: EngineConfig) -> data.StructLayout:
    """Payload of one result: ``acc[j]`` (binary32 bit pattern of row ``j``) and ``overflow``."""
    return data.StructLayout({"acc": data.ArrayLayout(32, cfg.native_dim), "overflow": 1})


# A row's dot product in the emitted Verilog (``TileEngine(verilog_dots=True)``): ``y`` is the exact
# sum of the ``N`` products of the signed ``W``-bit elements of ``a`` and ``b`` (exact integers, so
# any order gives it), by a balanced tree whose every node is ``OUT`` bits wide (``OUT`` holds any
# partial sum; node ``i`` adds nodes ``2i + 1`` and ``2i + 2``, the products are nodes
# ``N - 1 .. 2N - 2``). Amaranth writes each level of its tree at its own width, which a Verilated
# model masks and sign-extends level by level.
DOT_VERILOG = """
module accelml_dot #(parameter N = 16, parameter W = 8, parameter OUT = 19) (
    input wire [N*W-1:0] a,
    input wire [N*W-1:0] b,
    output wire [OUT-1:0] y
);
    wire signed [OUT-1:0] node [0:2*N-2];
    genvar i;
    generate
        for (i = 0; i < N; i = i + 1) begin : leaf
            wire signed [OUT-1:0] x = {{(OUT - W){a[i*W + W - 1]}}, a[i*W +: W]};
            wire signed [OUT-1:0] z = {{(OUT - W){b[i*W + W - 1]}}, b[i*W +: W]};
            assign node[N - 1 + i] = x * z;
        end
        for (i = 0; i < N - 1; i = i + 1) begin : sum
            assign node[i] = node[2*i + 1] + node[2*i + 2];
        end
    endgenerate
    assign y = node[0];
endmodule
"""


def dot_width(cfg: EngineConfig) -> int:
    """Signed width of an exact block dot product: ``2M + log2(N) + 1``."""
    return 2 * cfg.mantissa_bits + ceil_log2(cfg.native_dim) + 1


def _tree_sum(values):
    values = list(values)
    while len(values) > 1:
        values = [values[k] + values[k + 1] if k + 1 < len(values) else values[k]
                  for k in range(0, len(values), 2)]
    return values[0]


class TileEngine(wiring.Component):
    """One N x N tile engine; see the module docstring for the arithmetic.

    Parameters
    ----------
    cfg : EngineConfig
        N (``native_dim``), M (``mantissa_bits``) and E (``exponent_bits``) size the datapath.
    verilog_dots : bool
        The rows' dot products as instances of ``accelml_dot`` (:data:`DOT_VERILOG`, for the
        emitted Verilog), which Amaranth's simulator cannot run; else Amaranth adder trees.

    Members
    -------
    step : In(stream.Signature(step_layout(cfg)))
    result : Out(stream.Signature(result_layout(cfg)))
    """

    def __init__(self, cfg: EngineConfig, *, verilog_dots: bool = False):
        self.cfg = _check_cfg(cfg)
        self.verilog_dots = bool(verilog_dots)
        super().__init__({
            "step": In(stream.Signature(step_layout(cfg))),
            "result": Out(stream.Signature(result_layout(cfg))),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        n, m_bits = cfg.native_dim, cfg.mantissa_bits
        d_width = dot_width(cfg)
        # s = xw + xa - 2(M-1) for any xw, xa the signed(E+1) fields hold
        x_lo, x_hi = -(1 << cfg.exponent_bits), (1 << cfg.exponent_bits) - 1
        s_width = Shape.cast(range(2 * x_lo - 2 * (m_bits - 1), 2 * x_hi - 2 * (m_bits - 1) + 1)).width

        out_full = self.result.valid & ~self.result.ready
        hold = Signal()
        m.d.comb += self.step.ready.eq(~hold)

        # Stage 1: input register.
        v1 = Signal()
        p1 = Signal(step_layout(cfg))
        with m.If(~hold):
            m.d.sync += v1.eq(self.step.valid)
            with m.If(self.step.valid):
                m.d.sync += p1.eq(self.step.payload)

        # Stage 2: exact dot products and exponents.
        v2, first2, last2 = Signal(), Signal(), Signal()
        init2 = Signal(data.ArrayLayout(32, n))
        d2 = [Signal(signed(d_width), name=f"d_{j}") for j in range(n)]
        s2 = [Signal(signed(s_width), name=f"s_{j}") for j in range(n)]
        with m.If(~hold):
            m.d.sync += v2.eq(v1)
        with m.If(~hold & v1):
            m.d.sync += [first2.eq(p1.first), last2.eq(p1.last), init2.eq(p1.init)]
            for j in range(n):
                m.d.sync += [
                    d2[j].eq(self._dot(m, p1.w_mant[j], p1.a_mant, d_width, f"dot_{j}")),
                    s2[j].eq(p1.w_exp[j] + p1.a_exp - 2 * (m_bits - 1)),
                ]

        # Stage 3: conversion of each term to binary32.
        v3, first3, last3 = Signal(), Signal(), Signal()
        init3 = Signal(data.ArrayLayout(32, n))
        term3 = [Signal(32, name=f"term_{j}") for j in range(n)]
        term_ovf3 = Signal()
        term_ovf = []
        for j in range(n):
            cvt = m.submodules[f"cvt_{j}"] = ScaledIntToF32(d_width, s_width)
            m.d.comb += [cvt.d.eq(d2[j]), cvt.s.eq(s2[j])]
            term_ovf.append(cvt.overflow)
            with m.If(~hold & v2):
                m.d.sync += term3[j].eq(cvt.result)
        with m.If(~hold):
            m.d.sync += [v3.eq(v2), term_ovf3.eq(Mux(v2, Cat(*term_ovf).any(), 0))]
        with m.If(~hold & v2):
            m.d.sync += [first3.eq(first2), last3.eq(last2), init3.eq(init2)]

        # Stage 4: accumulation (one binary32 add per row in the feedback loop) and output.
        acc = [Signal(32, name=f"acc_{j}") for j in range(n)]
        ovf = Signal()
        sums = []
        add_ovf = []
        for j in range(n):
            add = m.submodules[f"add_{j}"] = F32Add()
            m.d.comb += [add.a.eq(Mux(first3, init3[j], acc[j])), add.b.eq(term3[j])]
            sums.append(add.result)
            add_ovf.append(add.overflow)
        new_ovf = Signal()
        m.d.comb += [
            new_ovf.eq(Mux(first3, 0, ovf) | term_ovf3 | Cat(*add_ovf).any()),
            hold.eq(v3 & last3 & out_full),
        ]
        with m.If(self.result.ready):
            m.d.sync += self.result.valid.eq(0)
        with m.If(v3 & ~hold):
            m.d.sync += [acc[j].eq(sums[j]) for j in range(n)]
            m.d.sync += ovf.eq(new_ovf)
            with m.If(last3):
                m.d.sync += [self.result.payload.acc[j].eq(sums[j]) for j in range(n)]
                m.d.sync += [self.result.payload.overflow.eq(new_ovf), self.result.valid.eq(1)]
        return m

    def _dot(self, m: Module, w, a, width: int, name: str):
        """The exact dot product of two mantissa vectors: an adder tree, or with ``verilog_dots``
        an instance of ``accelml_dot`` (:data:`DOT_VERILOG`), the same tree in plain Verilog."""
        n = self.cfg.native_dim
        if not self.verilog_dots:
            return _tree_sum(w[i] * a[i] for i in range(n))
        out = Signal(signed(width), name=name)
        m.submodules[name] = Instance("accelml_dot", p_N=n, p_W=self.cfg.mantissa_bits + 1, p_OUT=width,
                                      i_a=w.as_value(), i_b=a.as_value(), o_y=out)
        return out

