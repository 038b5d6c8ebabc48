"""``florence2 serve``: its arguments and what it runs (uvicorn, or Ray Serve with ``--ray``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..cli.argtypes import MODEL_HELP, add_model_arguments, model_options, port_number, positive_int
from ..errors import require
from .assets import AssetLimits
from .limits import API_KEY_ENV, ServerLimits, api_key_from_env

MIB = 1024 * 1024
_DEFAULTS = ServerLimits()
_ASSETS = AssetLimits()


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``serve`` subcommand's options."""
    p.add_argument("model", help=MODEL_HELP)
    add_model_arguments(p)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    p.add_argument("--port", type=port_number, default=8000)
    p.add_argument("--provider", default="cpu", help="cpu, cuda, tensorrt or an onnxruntime provider name")
    p.add_argument("--threads", type=positive_int, help="intra-op threads per session")
    key = p.add_mutually_exclusive_group()
    key.add_argument(
        "--api-key-file", help="require the key in this file's first line (Authorization: Bearer KEY)"
    )
    key.add_argument(
        "--api-key",
        help=f"require this key; visible to every local user in the process list: "
        f"prefer ${API_KEY_ENV} (the default) or --api-key-file",
    )
    p.add_argument("--no-ui", action="store_true", help="do not serve the try-it page at /")
    p.add_argument("--no-docs", action="store_true", help="do not serve /openapi.json and /docs")
    g = p.add_argument_group("batching")
    g.add_argument(
        "--max-batch-size", type=int, default=_DEFAULTS.max_batch_size, help="1 disables dynamic batching"
    )
    g.add_argument("--max-wait-ms", type=float, default=_DEFAULTS.max_wait_ms)
    g = p.add_argument_group("limits")
    g.add_argument("--max-body-mb", type=float, default=_DEFAULTS.max_body_bytes / MIB)
    g.add_argument("--max-pixels", type=int, default=_DEFAULTS.max_pixels)
    g.add_argument(
        "--max-new-tokens",
        type=int,
        default=_DEFAULTS.max_new_tokens,
        help="largest generation.max_new_tokens a request may ask for, and the default of requests "
        "that ask for none (capped by the model's positions; default: %(default)s)",
    )
    g.add_argument("--max-num-beams", type=int, default=_DEFAULTS.max_num_beams)
    g.add_argument("--max-queue", type=int, default=_DEFAULTS.max_queue)
    g.add_argument("--timeout", type=float, default=_DEFAULTS.request_timeout_s, help="seconds per request")
    g.add_argument(
        "--max-text-bytes",
        type=int,
        default=_DEFAULTS.max_text_bytes,
        help="UTF-8 size of a request's text, checked before tokenising",
    )
    g.add_argument(
        "--header-timeout",
        type=float,
        default=_DEFAULTS.header_timeout_s,
        help="seconds a connection may take to send a request's headers before it is closed",
    )
    g.add_argument(
        "--body-timeout",
        type=float,
        default=_DEFAULTS.body_timeout_s,
        help="seconds a request may take to send its body (408 after)",
    )
    g.add_argument(
        "--max-connections",
        type=int,
        default=_DEFAULTS.max_connections,
        help="open connections (also bounded by the open-file limit); past it the longest idle is closed",
    )
    g.add_argument(
        "--max-concurrent-decodes",
        type=int,
        default=_DEFAULTS.max_concurrent_decodes,
        help="images decoded at once (each holds its full-resolution pixels while decoding)",
    )
    g.add_argument(
        "--jpeg-draft",
        action="store_true",
        help="decode JPEGs at a reduced scale still >= the model's size: less memory, but the "
        "pixels differ slightly from Florence2.run's full decode",
    )
    g = p.add_argument_group("NVCF assets (images uploaded for the NVIDIA-format route)")
    g.add_argument("--max-assets", type=int, default=_ASSETS.max_assets, help="assets held at once")
    g.add_argument(
        "--max-asset-mb", type=float, default=_ASSETS.max_asset_bytes / MIB, help="size of one asset"
    )
    g.add_argument(
        "--max-assets-total-mb",
        type=float,
        default=_ASSETS.max_total_bytes / MIB,
        help="size of all assets together",
    )
    g.add_argument("--asset-ttl", type=float, default=_ASSETS.ttl_s, help="seconds an asset lives")
    g = p.add_argument_group("Ray Serve (the 'ray' extra)")
    g.add_argument(
        "--ray", action="store_true", help="serve through Ray Serve instead of a single uvicorn process"
    )
    g.add_argument("--ray-address", help="Ray cluster address (default: join a running cluster or start one)")
    g.add_argument(
        "--replicas", type=int, default=1, help="fixed replica count (ignored with --max-replicas)"
    )
    g.add_argument("--min-replicas", type=int, help="autoscaling lower bound")
    g.add_argument("--max-replicas", type=int, help="enables autoscaling up to this many replicas")
    g.add_argument(
        "--target-ongoing-requests", type=float, default=4.0, help="autoscaling target per replica"
    )
    g.add_argument("--num-cpus", type=float, default=1.0, help="CPUs reserved per replica")
    g.add_argument("--num-gpus", type=float, default=0.0, help="GPUs reserved per replica")


def limits_from_args(args: argparse.Namespace) -> ServerLimits:
    return ServerLimits(
        max_body_bytes=int(args.max_body_mb * MIB),
        max_pixels=args.max_pixels,
        max_new_tokens=args.max_new_tokens,
        max_num_beams=args.max_num_beams,
        max_queue=args.max_queue,
        request_timeout_s=args.timeout,
        max_batch_size=args.max_batch_size,
        max_wait_ms=args.max_wait_ms,
        api_key=api_key_from_args(args),
        max_text_bytes=args.max_text_bytes,
        header_timeout_s=args.header_timeout,
        body_timeout_s=args.body_timeout,
        max_connections=args.max_connections,
        max_concurrent_decodes=args.max_concurrent_decodes,
        jpeg_draft=args.jpeg_draft,
    )


def app_options(args: argparse.Namespace) -> dict:
    """``create_app``'s keyword options from the arguments: page, docs, asset limits."""
    assets = AssetLimits(
        max_assets=args.max_assets,
        max_asset_bytes=int(args.max_asset_mb * MIB),
        max_total_bytes=int(args.max_assets_total_mb * MIB),
        ttl_s=args.asset_ttl,
    )
    return {"ui": not args.no_ui, "docs": not args.no_docs, "assets": assets}


def api_key_from_args(args: argparse.Namespace) -> str | None:
    """``--api-key-file`` (first line), else ``--api-key`` (with a warning), else ``$FLORENCE2_API_KEY``."""
    if args.api_key_file is not None:
        try:
            lines = Path(args.api_key_file).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise ValueError(f"--api-key-file {args.api_key_file}: cannot read it ({e})") from None
        key = lines[0].strip() if lines else ""
        if not key:
            raise ValueError(f"--api-key-file {args.api_key_file}: the first line is empty")
        return key
    if args.api_key is not None:
        print(
            f"florence2: warning: --api-key is visible to every local user in the process list; "
            f"set ${API_KEY_ENV} or use --api-key-file instead",
            file=sys.stderr,
        )
    return api_key_from_env(args.api_key)


def run(args: argparse.Namespace) -> int:
    """Start the server and block until it stops."""
    limits = limits_from_args(args)
    options = app_options(args)
    if args.ray:
        from .ray_app import RaySettings, serve_forever

        settings = RaySettings(
            replicas=args.replicas,
            min_replicas=args.min_replicas,
            max_replicas=args.max_replicas,
            target_ongoing_requests=args.target_ongoing_requests,
            num_cpus=args.num_cpus,
            num_gpus=args.num_gpus,
            address=args.ray_address,
        )
        serve_forever(
            args.model,
            limits,
            settings,
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
