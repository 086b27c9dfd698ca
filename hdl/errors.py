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


class ModelFormatError(AccelmlError, ValueError):
    """A model file is missing, truncated, not ONNX, or fails the ONNX checker. Names the file."""

    exit_code = 7

    def __init__(self, message: str, *, source: str = "<model>"):
        self.source = source
        super().__init__(f"{source}: {message}")


class ShapeError(AccelmlError, ValueError):
    """A tensor shape is unresolved (dynamic), zero-sized or inconsistent. Names the tensor."""

    exit_code = 8

    def __init__(self, message: str, *, tensor: str | None = None, node: str | None = None):
        self.tensor, self.node = tensor, node
        where = []
        if node is not None:
            where.append(f"node {node!r}")
        if tensor is not None:
            where.append(f"tensor {tensor!r}")
        super().__init__(f"{', '.join(where)}: {message}" if where else message)


class UnsupportedOperatorError(AccelmlError, ValueError):
    """One or more graph nodes cannot run where they were required to. Names every such node.

    ``nodes`` is a list of ``(name, op_type, reason)`` triples.
    """

    exit_code = 9

    def __init__(self, message: str, *, nodes: list[tuple[str, str, str]] | None = None):
        self.nodes = list(nodes or [])
        super().__init__(message)


class IRError(AccelmlError, ValueError):
    """A compiler IR graph breaks a structural invariant (found by the verifier). Names the node."""

    exit_code = 10

    def __init__(self, message: str, *, node: str | None = None):
        self.node = node
        super().__init__(f"node {node!r}: {message}" if node is not None else message)


class CapacityError(AccelmlError, ValueError):
    """A layer cannot be scheduled on an engine: an on-chip file or the external memory is too small.

    Names the layer and the resource."""

    exit_code = 11


class PackageError(AccelmlError, ValueError):
    """A compiled package is missing, corrupt, or built for another EngineConfig."""

    exit_code = 12


class WorkspaceError(AccelmlError, ValueError):
    """A workspace is missing or unreadable, or a model, image, service or compute target name is
    unknown. Names the workspace path or the object."""

    exit_code = 13


class DependencyError(WorkspaceError):
    """An object cannot be deleted while another depends on it (a service on its image, an image on
    its model). Names the dependent."""

    exit_code = 14


class ServeError(AccelmlError, RuntimeError):
    """A server, deployment or client operation failed (port in use, service unreachable, request
    refused). Names the service or address."""

    exit_code = 15


class PrecisionError(AccelmlError, ValueError):
    """A precision policy, latency budget or calibration data set is invalid or cannot be met.
    Names the input or the limit."""

    exit_code = 16


class RtlError(AccelmlError, RuntimeError):
    """The RTL simulation could not be built or run (Verilator missing, build failed, engine
    stopped with an error code). Names the step or the instruction. When the engine stopped with
    an error code, ``code`` holds it (``hdl.engine.status.ErrorCode``) and ``pc`` the instruction
    index it stopped at; both are None otherwise."""

    exit_code = 17

    def __init__(self, message: str, *, code=None, pc: int | None = None):
        self.code, self.pc = code, pc
        super().__init__(message)


class DeviceError(AccelmlError, ValueError):
    """A device is unknown or not available on this machine. Names the device."""

    exit_code = 18


class DestinationError(PackageError):
    """A destination exists and is not something accelml wrote (a file, a directory with other
    contents, the input model), so writing there could lose data. Nothing was touched."""

    exit_code = 19
