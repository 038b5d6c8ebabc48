"""``florence2 serve``: its arguments and what it runs (uvicorn, or Ray Serve with ``--ray``).

The limits' and Ray's flags are generated from their declarations (``settings.py``): each shows its
default and its ``FLORENCE2_*`` environment variable in ``--help``, and is read from that variable when
the flag is not given.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..cli.argtypes import MODEL_HELP, add_model_arguments, model_options, port_number, positive_int
from ..errors import require
from .ray_app import RaySettings
from .settings import ServerLimits, env_name, settings_fields

_API_KEY = next(f for f in settings_fields(ServerLimits) if f.name == "api_key")
API_KEY_ENV = env_name(_API_KEY)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``serve`` subcommand's options."""
    p.add_argument("model", help=MODEL_HELP)
    add_model_arguments(p)
    p.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: %(default)s, loopback only)"
    )
    p.add_argument("--port", type=port_number, default=8000, help="(default: %(default)s)")
    p.add_argument(
        "--provider",
        default="cpu",
        help="cpu, cuda, tensorrt or an onnxruntime provider name (default: %(default)s)",
    )
    p.add_argument(
        "--threads", type=positive_int, help="intra-op threads per session (default: onnxruntime's choice)"
    )
    key = p.add_mutually_exclusive_group()
    key.add_argument(
        "--api-key-file",
        help="require the key in this file's first line (Authorization: Bearer KEY; default: no file)",
    )
    key.add_argument(
        "--api-key",
        help=f"{_API_KEY.metadata['setting'].help} (default: ${API_KEY_ENV}, else no key)",
    )
    p.add_argument("--no-ui", action="store_true", help="do not serve the try-it page at / (default: served)")
    p.add_argument(
        "--no-docs", action="store_true", help="do not serve /openapi.json and /docs (default: served)"
    )
    ServerLimits.add_flags(p, skip={"api_key"})
    groups = {"ray": p.add_argument_group(RaySettings.GROUPS["ray"])}
    groups["ray"].add_argument(
        "--ray",
        action="store_true",
        help="serve through Ray Serve (default: off, a single uvicorn process)",
    )
    RaySettings.add_flags(p, groups)


def limits_from_args(args: argparse.Namespace) -> ServerLimits:
    """The limits: flags, then ``FLORENCE2_*`` environment variables, then the defaults."""
    return ServerLimits.from_args(args, os.environ, api_key=api_key_from_args(args))


def api_key_from_args(args: argparse.Namespace) -> str | None:
    """The API key: ``--api-key-file`` (its first line), else ``--api-key`` (with a warning: the process list
    shows it), else ``$FLORENCE2_API_KEY``; None when none is set (no authentication)."""
    key = api_key_from_file(args.api_key_file)
    if key is not None:
        return key
    if args.api_key is not None:
        print(
            f"florence2: warning: --api-key is visible to every local user in the process list; "
            f"set ${API_KEY_ENV} or use --api-key-file instead",
            file=sys.stderr,
        )
        return args.api_key
    return os.environ.get(API_KEY_ENV) or None


def app_options(args: argparse.Namespace) -> dict:
    """``create_app``'s keyword options from the arguments: the page and the docs."""
    return {"ui": not args.no_ui, "docs": not args.no_docs}


def api_key_from_file(path: str | None) -> str | None:
    """The first line of ``--api-key-file`` (None without the flag)."""
    if path is None:
        return None
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"--api-key-file {path}: cannot read it ({e})") from None
    key = lines[0].strip() if lines else ""
    if not key:
        raise ValueError(f"--api-key-file {path}: the first line is empty")
    return key


def run(args: argparse.Namespace) -> int:
    """Start the server and block until it stops."""
    limits = limits_from_args(args)
    options = app_options(args)
    if args.ray:
        from .ray_app import serve_forever

        serve_forever(
            args.model,
            limits,
            RaySettings.from_args(args, os.environ),
            host=args.host,
            port=args.port,
            provider=args.provider,
            threads=args.threads,
            app_options=options,
            model_options=model_options(args),
        )
        return 0
    from ..model import Florence2
    from .app import create_app
    from .connections import server_config

    uvicorn = require("uvicorn", "serve", "The Florence-2 server")
    model = Florence2.from_pretrained(
        args.model, providers=args.provider, threads=args.threads, **model_options(args)
    )
    app = create_app(model, limits, **options)
    uvicorn.Server(
        server_config(app, args.host, args.port, limits, log_level="info", timeout_graceful_shutdown=5)
    ).run()
    return 0
