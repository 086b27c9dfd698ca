"""``accelml serve PKG``: the subcommand's arguments (importing this module is cheap; the server
and its gRPC / TensorFlow protos load only when the command runs)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

__all__ = ["register"]


def _options(args):
    from .server import ServeOptions

    return ServeOptions(package=args.package, name=args.name, grpc_port=args.grpc_port, rest_port=args.rest_port,
                        host=args.host, device=args.device, auth_keys=args.auth_keys, tls_cert=args.tls_cert,
                        tls_key=args.tls_key, max_request_bytes=args.max_request_bytes, workers=args.workers)


def cmd_serve(args) -> int:
    from accelml.hdl.errors import PackageError

    if not (Path(args.package) / "manifest.json").is_file():
        raise PackageError(f"{args.package}: not an accelml package (no manifest.json)")
    # TensorFlow's protos load the TensorFlow runtime (no TensorFlow op runs here), whose C++
    # start-up notes would bury the ready line; gRPC's own log lines repeat the errors reported
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    options = _options(args)
    from .server import serve

    return serve(options)


def register(sub: argparse._SubParsersAction, name: str) -> None:
    p = sub.add_parser(name, help="serve a package over gRPC and REST (TF Serving and KServe v2 protocols)")
    p.add_argument("package", type=Path)
    p.add_argument("--name", default=None, help="model name (default: the package's model name)")
    p.add_argument("--grpc-port", type=int, default=8500, help="gRPC port (0: pick a free one; default 8500)")
    p.add_argument("--rest-port", type=int, default=8501, help="REST port (0: pick a free one; default 8501)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--device", default="funcsim", help="device that runs the engine (default funcsim)")
    p.add_argument("--auth-keys", type=Path, default=None, metavar="FILE",
                   help='JSON {"primary": ..., "secondary": ...}: requests need "Authorization: Bearer <key>"')
    p.add_argument("--tls-cert", type=Path, default=None, metavar="FILE", help="PEM certificate (TLS on both ports)")
    p.add_argument("--tls-key", type=Path, default=None, metavar="FILE", help="PEM private key")
    p.add_argument("--max-request-bytes", type=int, default=64 << 20, metavar="N",
                   help="largest request accepted (default 64 MiB)")
    p.add_argument("--workers", type=int, default=16, help="request threads per protocol (default 16)")
    p.set_defaults(func=cmd_serve)
