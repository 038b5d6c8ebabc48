"""``florence2 mcp``: its arguments and what it runs (stdio by default, streamable HTTP with ``--http``).

Importing this module needs no MCP SDK; :func:`run` checks for it first and names the extra to install.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

from ..cli.argtypes import MODEL_HELP, add_model_arguments, model_options, port_number, positive_int
from ..errors import require
from ..server.cli import API_KEY_ENV, api_key_from_args
from .settings import MIB, McpSettings

_DEFAULTS = McpSettings.__dataclass_fields__  # defaults shown in --help come from the dataclass


def _default(name: str):
    return _DEFAULTS[name].default


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``mcp`` sub-command's options."""
    p.add_argument("model", help=MODEL_HELP)
    add_model_arguments(p)
    p.add_argument("--provider", default="cpu", help="cpu, cuda, tensorrt or an onnxruntime provider name")
    p.add_argument(
        "--threads", type=positive_int, help="intra-op threads per session (default: chosen by onnxruntime)"
    )
    g = p.add_argument_group("images the tools may read")
    g.add_argument(
        "--allow-root",
        action="append",
        metavar="FOLDER",
        help="a folder whose files (symlinks resolved) the tools may read; repeat for several "
        "(default: the working directory); relative paths are taken from the first",
    )
    g.add_argument(
        "--allow-url",
        action="store_true",
        help="fetch http(s) image URLs of public addresses (never loopback, private, link-local or "
        "cloud-metadata ones; checked after DNS and on every redirect)",
    )
    g.add_argument(
        "--max-pixels",
        type=positive_int,
        default=_default("max_pixels"),
        help="largest image a tool reads, width x height",
    )
    g.add_argument(
        "--max-image-mb",
        type=float,
        default=_default("max_image_bytes") / MIB,
        help="bytes of one image file",
    )
    g.add_argument(
        "--fetch-timeout",
        type=float,
        default=_default("fetch_timeout_s"),
        help="seconds per URL, redirects included",
    )
    g.add_argument(
        "--cache-images",
        type=positive_int,
        default=_default("cache_images"),
        help="encoded images kept, so further calls on one image skip the vision encoder",
    )
    g.add_argument(
        "--cache-mb", type=float, default=_default("cache_bytes") / MIB, help="their features' size"
    )
    g = p.add_argument_group("transport (default: stdio)")
    g.add_argument(
        "--http", action="store_true", help="serve streamable HTTP at http://HOST:PORT/mcp instead"
    )
    g.add_argument(
        "--host", default="127.0.0.1", help="address to bind with --http (default: 127.0.0.1, loopback only)"
    )
    g.add_argument("--port", type=port_number, default=8000, help="port to listen on with --http")
    key = g.add_mutually_exclusive_group()
    key.add_argument(
        "--api-key-file",
        help="with --http: require the key in this file's first line (Authorization: Bearer KEY; "
        "default: no file)",
    )
    key.add_argument(
        "--api-key",
        help=f"with --http: require this key; visible in the process list: prefer ${API_KEY_ENV} "
        "(the default) or --api-key-file",
    )


def settings_from_args(args: argparse.Namespace) -> McpSettings:
    roots = tuple(Path(r) for r in args.allow_root) if args.allow_root else (Path.cwd(),)
    if args.max_image_mb <= 0 or args.cache_mb <= 0:
        raise ValueError("--max-image-mb and --cache-mb must be > 0")
    return McpSettings(
        roots=roots,
        allow_url=args.allow_url,
        max_image_bytes=int(args.max_image_mb * MIB),
        max_pixels=args.max_pixels,
        fetch_timeout_s=args.fetch_timeout,
        cache_images=args.cache_images,
        cache_bytes=int(args.cache_mb * MIB),
    )


def run(args: argparse.Namespace) -> int:
    """Load the model and serve its tools until the client hangs up (stdio) or the process is stopped."""
    require("mcp", "mcp", "'florence2 mcp'")
    if not args.http and (args.api_key is not None or args.api_key_file is not None):
        raise ValueError("--api-key and --api-key-file only apply with --http (stdio has no network peer)")
    api_key = api_key_from_args(args) if args.http else None
    settings = settings_from_args(args)

    from ..model import Florence2
    from .app import create_server, http_app
    from .tools import Florence2Tools

    with contextlib.redirect_stdout(sys.stderr):  # over stdio, stdout carries the protocol alone
        model = Florence2.from_pretrained(
            args.model, providers=args.provider, threads=args.threads, **model_options(args)
        )
    server = create_server(Florence2Tools(model, settings))
    if not args.http:
        server.run("stdio")
        return 0
    uvicorn = require("uvicorn", "mcp", "'florence2 mcp --http'")
    app = http_app(server, host=args.host, api_key=api_key, max_image_bytes=settings.max_image_bytes)
    print(f"florence2 mcp: streamable HTTP at http://{args.host}:{args.port}/mcp", file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
