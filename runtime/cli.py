"""The ``accelml`` command line.

One ``main()`` turns every typed error into a one-line message on stderr and the error's exit code;
an unexpected exception is reported as an internal error (exit 70) without a traceback unless
``ACCELML_DEBUG=1``. Subcommands register themselves in ``COMMANDS``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from accelml.hdl.config import PRESETS, EngineConfig, preset
from accelml.hdl.errors import AccelmlError, ConfigError, ProgramFormatError
from accelml.hdl.program import MAGIC, Program, assemble_program

from .storage import claim_output, write_file_atomic

EXIT_USAGE = 2
EXIT_IO = 74
EXIT_INTERNAL = 70


class UsageError(AccelmlError):
    exit_code = EXIT_USAGE


def add_config_args(p: argparse.ArgumentParser, default: str = "tiny") -> None:
    p.add_argument("--preset", default=None, help=f"engine preset ({', '.join(PRESETS)}; default {default})")
    p.add_argument("--config", type=Path, default=None, help="EngineConfig JSON file (instead of --preset)")
    p.add_argument("--format", default=None, help="BFP format to apply to the preset (ms-fp9, msfp12, msfp16, mxint8)")
    p.set_defaults(_default_preset=default)


def config_from_args(args) -> EngineConfig:
    if args.config is not None and args.preset is not None:
        raise UsageError("give either --preset or --config, not both")
    if args.config:
        cfg = EngineConfig.from_json(args.config.read_text())
    else:
        cfg = preset(args.preset or args._default_preset)
    return cfg.with_format(args.format) if getattr(args, "format", None) else cfg


def read_program(path: Path, cfg: EngineConfig | None) -> Program:
    """A program from assembly text or a binary (told apart by the binary's magic)."""
    blob = path.read_bytes()
    if blob[:4] == MAGIC:
        return Program.from_bytes(blob, config=cfg, source=str(path))
    if cfg is None:
        raise UsageError(f"{path}: assembling text needs an engine config (--preset or --config)")
    try:
        text = blob.decode()
    except UnicodeDecodeError:
        raise ProgramFormatError(f"{path}: neither an accelml program binary nor assembly text") from None
    return assemble_program(text, cfg, source=str(path))


def _positive_int(text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return value


def _parse_int(text: str, what: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise UsageError(f"{what}: {text!r} is not an integer") from None


# -- subcommands ----------------------------------------------------------------------------------

def cmd_asm(args) -> int:
    cfg = config_from_args(args)
    prog = assemble_program(args.source.read_text(), cfg, source=str(args.source))
    out = claim_output(args.output or args.source.with_suffix(".bin"), inputs=[args.source],
                       ours=lambda head: head.startswith(MAGIC), what="program binary")
    write_file_atomic(out, prog.to_bytes())
    print(f"{out}: {len(prog.instructions)} instructions for {cfg.name} ({cfg.short_hash})")
    return 0


def cmd_disasm(args) -> int:
    cfg = config_from_args(args) if (args.preset or args.config) else None
    prog = Program.from_bytes(args.binary.read_bytes(), config=cfg, source=str(args.binary))
    text = prog.to_asm()
    if args.output:
        claim_output(args.output, inputs=[args.binary], force=args.force, what="disassembly")
        write_file_atomic(args.output, text.encode())
    else:
        sys.stdout.write(text)
    return 0


def cmd_sim(args) -> int:
    from accelml.sim.funcsim import FuncSim
    from accelml.sim.memory import ExternalMemory

    cfg = config_from_args(args)
    prog = read_program(args.program, cfg)
    dumps = []
    for spec in args.dump:
        where, sep, file = spec.partition("=")
        addr, sep2, nbytes = where.partition(":")
        if not sep or not sep2:
            raise UsageError(f"--dump {spec!r}: expected ADDR:NBYTES=FILE")
        claim_output(Path(file), inputs=[args.program] + [s.partition("=")[2] for s in args.load],
                     force=args.force, what="memory dump")
        dumps.append((_parse_int(addr, "--dump address"), _parse_int(nbytes, "--dump size"), file))
    loads = []
    for spec in args.load:
        addr, sep, file = spec.partition("=")
        if not sep:
            raise UsageError(f"--load {spec!r}: expected ADDR=FILE")
        loads.append((_parse_int(addr, "--load address"), Path(file).read_bytes()))
    size = args.mem_size if args.mem_size is not None else max(
        [1 << 20] + [a + len(b) for a, b in loads])
    mem = ExternalMemory(cfg, size)
    for addr, blob in loads:
        mem.write(addr, blob, f"--load at {addr:#x}")
    sim = FuncSim(cfg, mem)
    stats = sim.run(prog)
    print(f"{args.program}: ran on the functional simulator ({cfg.describe()})")
    print(stats.summary(cfg))
    for addr, nbytes, file in dumps:
        data = mem.read(addr, nbytes, "--dump")
        write_file_atomic(file, data.tobytes())
        print(f"wrote {len(data)} bytes from {addr} to {file}")
    return 0


def cmd_compile(args) -> int:
    from accelml.compiler.driver import compile_model, load_model_source
    from accelml.compiler.frontend import to_ir
    from accelml.compiler.partition import partition
    from accelml.compiler.precision import request

    request(args.precision, args.latency_budget, split_weights=args.split_weights,
            split_activations=args.split_activations)  # a bad request fails before any compile work
    cfg = config_from_args(args)
    if args.explain:
        print(partition(to_ir(load_model_source(args.model))).render())
        if args.output is None:
            return 0
    if args.output is None:
        raise UsageError("compile needs -o PKG (or --explain alone)")
    from .package import check_destination, save_package

    check_destination(args.output)  # refuse before the compile, not after it
    calibration = _load_calibration(args.calibrate) if args.calibrate else None
    print(f"compiling {args.model} for {cfg.describe()}", flush=True)
    if calibration is not None:
        print(f"calibration from {len(calibration)} sample(s) (measurement, compensated rounding, bias correction): "
              "each runs through the golden model layer by layer (about 2 s per 224 x 224 image)", flush=True)
    cm = compile_model(args.model, config=cfg, name=Path(args.model).stem, calibration=calibration,
                       split_weights=args.split_weights, split_activations=args.split_activations,
                       precision=args.precision, latency_budget=args.latency_budget, postprocess=args.postprocess)
    save_package(cm, args.output)
    print(cm.report())
    if args.explain:
        from accelml.compiler.driver import precision_table

        print(precision_table(cm.precision))
    if args.plot:
        cm.plot(args.plot)
        print(f"plot: {args.plot}")
    print(f"package: {args.output}")
    return 0


def _load_calibration(path: Path) -> list[dict]:
    """--calibrate FILE.npz: one array per model input, samples along the first axis (S, *shape)
    or, for inputs whose batch is 1, (S, *shape[1:]) -> a list of S feeds."""
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (ValueError, OSError) as e:
        if isinstance(e, FileNotFoundError):
            raise
        raise UsageError(f"--calibrate: {path} is not a readable .npz file ({e})") from None
    if not arrays:
        raise UsageError(f"--calibrate: {path} holds no arrays")
    counts = {k: len(v) for k, v in arrays.items() if v.ndim}
    if len(set(counts.values())) != 1 or len(counts) != len(arrays):
        raise UsageError(f"--calibrate: every array needs the same number of samples along axis 0, got {counts}")
    n = next(iter(counts.values()))
    return [{k: v[i] for k, v in arrays.items()} for i in range(n)]


def _parse_inputs(specs: list[str]) -> dict:
    import numpy as np

    feeds = {}
    for spec in specs:
        name, sep, file = spec.partition("=")
        if not sep or not name:
            raise UsageError(f"--input {spec!r}: expected NAME=FILE.npy")
        if not file.endswith(".npy"):  # an encoded image (JPEG, PNG, ...) for a string input
            feeds[name] = np.array([Path(file).read_bytes()], dtype=object)
            continue
        try:
            feeds[name] = np.load(file, allow_pickle=False)
        except (ValueError, OSError) as e:
            if isinstance(e, FileNotFoundError):
                raise
            raise UsageError(f"--input {name}: {file} is not a readable .npy file ({e})") from None
    return feeds


def cmd_run(args) -> int:
    import io

    import numpy as np

    from .package import load

    inputs = [args.package] + [s.partition("=")[2] for s in args.input]
    out = claim_output(Path(args.output), inputs=inputs, ours=lambda head: head.startswith(b"PK"), what=".npz result")
    options = {"max_steps": args.max_steps}
    if args.device == "rtl":
        from .device import claim_trace

        if args.trace is not None:
            if Path(args.trace).resolve() == out.resolve():
                raise UsageError("--trace and -o name the same file")
            claim_trace(args.trace, inputs=inputs)
        options.update(max_cycles=args.max_cycles, trace=args.trace, progress=sys.stderr,
                       threads=args.sim_threads or 1)
    elif args.trace is not None or args.max_cycles is not None or args.sim_threads is not None:
        raise UsageError(f"--trace, --max-cycles and --sim-threads apply to --device rtl, not {args.device}")
    config = config_from_args(args) if (args.preset or args.config) else None
    model = load(args.package, device=args.device, config=config, **options)
    feeds = _parse_inputs(args.input)
    outputs = model.run(feeds)
    buf = io.BytesIO()
    np.savez(buf, **outputs)
    write_file_atomic(out, buf.getvalue())
    for name, v in outputs.items():
        print(f"{name}: shape {tuple(v.shape)}, dtype {v.dtype}")
    stats = model.device.last_stats
    if stats is not None:
        print(stats.summary(model.cfg))
    print(f"wrote {out}")
    return 0


def cmd_hdl_emit(args) -> int:
    from accelml.hdl.emit import emit_owner_problem, engine_verilog, write_emit

    from .storage import check_destination, write_dir_atomic

    cfg = config_from_args(args)
    what = "accelml hdl emit directory"
    check_destination(args.output, emit_owner_problem, what)  # before the conversion's seconds
    try:
        text, manifest = engine_verilog(cfg, imem_depth=args.imem_depth)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"the RTL cannot build EngineConfig {cfg.name} ({cfg.short_hash}): {e}") from None
    write_dir_atomic(args.output, lambda tmp: write_emit(tmp, text, manifest), owned=emit_owner_problem, what=what)
    print(f"{args.output}: {manifest['verilog']} ({len(text):,} bytes, sha256 {manifest['verilog_sha256'][:12]}) "
          f"and manifest.json for {cfg.describe()}, imem depth {args.imem_depth}, {len(manifest['ports'])} ports")
    return 0


def cmd_config(args) -> int:
    cfg = config_from_args(args)
    print(cfg.describe())
    print(cfg.to_json())
    print(f"hash {cfg.hash}")
    return 0


# Later parts of the toolchain add subcommands here: name -> register(subparsers, name).
COMMANDS: dict = {}
COMMANDS.update(__import__("accelml.runtime.workspace.cli", fromlist=["_"]).WORKFLOW_COMMANDS)  # workflow

from .serve.command import register as _register_serve  # noqa: E402  (serve: runtime/serve/)

COMMANDS["serve"] = _register_serve


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="accelml", description="Compile, simulate and serve CNNs on a BFP engine.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("asm", help="assemble a program")
    p.add_argument("source", type=Path)
    p.add_argument("-o", "--output", type=Path)
    add_config_args(p)
    p.set_defaults(func=cmd_asm)

    p = sub.add_parser("disasm", help="disassemble a program binary")
    p.add_argument("binary", type=Path)
    p.add_argument("-o", "--output", type=Path)
    p.add_argument("--force", action="store_true", help="replace an existing output file")
    add_config_args(p)
    p.set_defaults(func=cmd_disasm)

    p = sub.add_parser("sim", help="run a program (binary or assembly) on the functional simulator")
    p.add_argument("program", type=Path)
    p.add_argument("--load", action="append", default=[], metavar="ADDR=FILE",
                   help="place a file's bytes in external memory before the run")
    p.add_argument("--dump", action="append", default=[], metavar="ADDR:NBYTES=FILE",
                   help="write external memory to a file after the run")
    p.add_argument("--mem-size", type=int, default=None, help="external memory image size in bytes")
    p.add_argument("--force", action="store_true", help="replace existing --dump files")
    add_config_args(p)
    p.set_defaults(func=cmd_sim)

    p = sub.add_parser("compile", help="compile an ONNX model or a SavedModel directory to a package")
    p.add_argument("model", type=Path)
    p.add_argument("-o", "--output", type=Path, help="package directory to write (.accel)")
    p.add_argument("--explain", action="store_true",
                   help="list what runs on the engine and what on the host (with -o: also each layer's precision)")
    p.add_argument("--plot", type=Path, help="write per-layer utilisation and roofline efficiency as a PNG")
    p.add_argument("--calibrate", type=Path, metavar="FILE.npz",
                   help="samples for the precision policy's measurement, compensated weight rounding and bias "
                        "correction: one array per input, samples along axis 0")
    p.add_argument("--precision", default=None, metavar="POLICY",
                   help="per-layer precision policy: fast (single pass), balanced (default: split weights / "
                        "activations where they pay, within 1.3x fast's modelled latency), exact (all split)")
    p.add_argument("--latency-budget", default=None, metavar="RATIO",
                   help="the balanced policy with this modelled latency budget, a ratio (>= 1) to the fast program")
    p.add_argument("--split-weights", action="store_true",
                   help="weights in two BFP parts multiplied in two passes: ~2x weight precision, 2x products")
    p.add_argument("--split-activations", action="store_true",
                   help="convolution inputs in two BFP planes, one more pass of products: ~2x activation "
                        "precision, 2x activation traffic")
    add_config_args(p, default="a10")
    p.add_argument("--postprocess", choices=["ssd"], default=None,
                   help="the outputs are SSD multibox heads: the package decodes boxes and applies NMS on the host")
    p.set_defaults(func=cmd_compile)

    p = sub.add_parser("run", help="run a package on inputs from .npy files")
    p.add_argument("package", type=Path)
    p.add_argument("--input", action="append", default=[], metavar="NAME=FILE.npy",
                   help="an array (.npy), or any other file as encoded image bytes (a JPEG-input package)")
    p.add_argument("--device", default="funcsim",
                   help="funcsim (default: the functional simulator) or rtl (the Verilated engine RTL, built "
                        "once per EngineConfig into the user cache)")
    p.add_argument("-o", "--output", type=Path, required=True, help="output .npz (every output by name)")
    p.add_argument("--preset", default=None, help="refuse a package built for another engine preset")
    p.add_argument("--config", type=Path, default=None, help="refuse a package built for another EngineConfig (JSON)")
    p.add_argument("--max-steps", type=_positive_int, default=50_000_000, metavar="N",
                   help="instructions a program may execute (default 50,000,000)")
    p.add_argument("--max-cycles", type=_positive_int, default=None, metavar="N",
                   help="rtl: cycle budget of each engine run (default: twice the cycle model's estimate + 10,000)")
    p.add_argument("--sim-threads", type=_positive_int, default=None, metavar="N",
                   help="rtl: threads of the Verilated engine (default 1; a build of its own; more than the idle "
                        "cores slows it down)")
    p.add_argument("--trace", type=Path, default=None, metavar="FILE.fst",
                   help="rtl: write the engine's waveform (FST; a separate Verilator build); a package with "
                        "several engine segments writes FILE.1.fst, ... for the later ones")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("hdl", help="the engine's hardware description")
    hdl = p.add_subparsers(dest="hdl_command", metavar="HDL_COMMAND")
    hdl.required = True
    e = hdl.add_parser("emit", help="write the engine's top-level Verilog and a manifest (config, ports, sha256)",
                       description="Write DIR/accelml_engine.v (the engine of one EngineConfig, module accelml_engine: "
                                   "clk, asynchronous active-high rst, the memory port, the instruction-memory "
                                   "write port, run inputs and status) and DIR/manifest.json (the EngineConfig, "
                                   "its hash, the Verilog's sha256, every port with direction and width, the "
                                   "instruction-memory depth). DIR is created atomically; an existing DIR is "
                                   "replaced only if it holds an earlier emit and nothing else.")
    e.add_argument("-o", "--output", type=Path, required=True, metavar="DIR", help="directory to create")
    e.add_argument("--imem-depth", type=_positive_int, default=4096, metavar="N",
                   help="instruction-memory depth in instructions (default 4096)")
    add_config_args(e)
    e.set_defaults(func=cmd_hdl_emit)

    p = sub.add_parser("config", help="print an engine configuration and its hash")
    add_config_args(p)
    p.set_defaults(func=cmd_config)

    for name, register in COMMANDS.items():
        register(sub, name)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except AccelmlError as e:
        print(f"accelml: error: {e}", file=sys.stderr)
        return e.exit_code
    except (FileNotFoundError, IsADirectoryError, PermissionError) as e:
        print(f"accelml: error: {e.filename}: {e.strerror}", file=sys.stderr)
        return EXIT_IO
    except KeyboardInterrupt:
        print("accelml: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a bug: say so in one line, keep the traceback for debugging
        if os.environ.get("ACCELML_DEBUG"):
            raise
        print(f"accelml: internal error: {type(e).__name__}: {e} (set ACCELML_DEBUG=1 for a traceback)",
              file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
