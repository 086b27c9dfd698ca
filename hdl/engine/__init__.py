"""The engine in Amaranth: control (fetch, decode, registers, loops, watchdog), DMA, register files,
the multi-function unit, pooling, the window address generator and the matrix-vector unit.

``Engine`` (``top.py``) is the top level; every block is a ``wiring.Component`` parametrised by
``EngineConfig`` and validating it. ``status.ErrorCode`` lists the codes the engine stops with,
shared by the RTL and the Python harness (``accelml.sim.rtl_engine``).
"""

from .status import ErrorCode, Unit

__all__ = ["ErrorCode", "Unit"]
