"""The accelml exception hierarchy, shared by every part of the toolchain.

Each error names the offending thing (the parameter, the tensor, the source line, the ONNX node)
in its message. The CLI's ``main()`` maps these to one-line messages and exit codes; nothing else
in the project decides how an error is shown.
"""

from __future__ import annotations


class AccelmlError(Exception):
    """Base class of every error the toolchain raises on purpose."""

    exit_code = 1


class ConfigError(AccelmlError, ValueError):
    """An EngineConfig parameter, preset or format name is invalid."""

    exit_code = 2


class NumericsError(AccelmlError, ArithmeticError):
    """A value cannot be represented under the documented numerics policy (NaN input, overflow)."""

    exit_code = 3


class AssemblyError(AccelmlError, ValueError):
    """Malformed assembly text. ``line`` and ``column`` are 1-based."""

    exit_code = 4

    def __init__(self, message: str, *, line: int, column: int, source: str = "<asm>"):
        self.line, self.column, self.source = line, column, source
        super().__init__(f"{source}:{line}:{column}: {message}")


class ProgramFormatError(AccelmlError, ValueError):
    """A program binary is malformed, truncated, corrupt, foreign or built for another config."""

    exit_code = 5


class ExecutionError(AccelmlError, RuntimeError):
    """A program did something illegal at run time (address out of range, loop overflow, ...)."""

    exit_code = 6
