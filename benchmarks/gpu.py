"""GPU benchmark: per-stage and per-token latency on CUDA, full-size random-weight base and large.

    python benchmarks/gpu.py                         # base and large, fp32 and fp16, CUDA (needs onnxruntime-gpu)
    python benchmarks/gpu.py --smoke --out /tmp/g    # tiny model on the CPU provider: checks the script runs

For each model and variant it reports ``florence2 bench``'s stages (preprocess, vision encoder, text
encoder, first step, per token, end to end) with IO binding on (the default on a GPU) and, for fp32,
off too (what keeping the KV cache on the device saves). With ``--reference`` (default on when torch
sees a GPU) transformers runs the same requests on the same GPU (eager, fp32, forced N tokens) and
the speed-ups are reported as ratios from the same run.

The fp16 variant converts the text encoder and the decoder and keeps the vision encoder in fp32:
with random weights DaViT's activations exceed the fp16 range (see the precision notes in the
README); with a real checkpoint use ``florence2 export --dtype fp16``.

Writes ``gpu-<device>.json`` and ``gpu-<device>.md`` under ``benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from cpu import CACHE, RESULTS, cached_checkpoint, cached_export, log

GRID = dict(tokens=[20, 128], beams=[1, 3], batch=[1, 4])
SMOKE = dict(tokens=[4], beams=[1, 2], batch=[1])


def fp16_folder(fp32: Path, cache: Path, size: str) -> Path:
    """fp16 text encoder + decoder, fp32 vision encoder (random weights overflow fp16 in DaViT)."""
    from florence2_export.precision import Fp16Options, convert_folder

    out = cache / size / "fp16-text-decoder"
    if not (out / ".complete").exists():
        log(f"converting {fp32} to fp16 (text encoder + decoder) in {out} ...")
        convert_folder(fp32, out, "fp16", Fp16Options(graphs=("text_encoder", "decoder")), overwrite=True)
        (out / ".complete").touch()
    return out


def device_name(provider: str) -> str:
    if provider == "cpu":
        import platform

        return f"cpu-{platform.machine()}"
    try:
        import torch

        return torch.cuda.get_device_name(0)
    except Exception:
        return "cuda"


def reference_times(checkpoint: Path, device: str, grid: dict, runs: int, task: str) -> dict:
    """transformers' end-to-end seconds per (tokens, beams, batch), forced tokens, median of ``runs``."""
    import statistics

    import torch
    from transformers import AutoProcessor, Florence2ForConditionalGeneration

    from florence2_runtime.cli.bench import generated_image

    model = (
        Florence2ForConditionalGeneration.from_pretrained(
            checkpoint, attn_implementation="eager", dtype=torch.float32
        )
        .to(device)
        .eval()
    )
    processor = AutoProcessor.from_pretrained(checkpoint)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    out = {}
    for n in grid["tokens"]:
        for k in grid["beams"]:
            for b in grid["batch"]:
                images = [generated_image(seed=i) for i in range(b)]
                times = []
                for i in range(runs + 1):
                    sync()
                    t0 = time.perf_counter()
                    inputs = processor(text=[task] * b, images=images, return_tensors="pt").to(device)
                    with torch.no_grad():
                        model.generate(**inputs, max_new_tokens=n, min_new_tokens=n, num_beams=k)
                    sync()
                    if i:  # the first call warms up
                        times.append(time.perf_counter() - t0)
                out[f"{n}-{k}-{b}"] = statistics.median(times)
    del model
    return out


def bench_folder(folder: Path, provider: str, io_binding: bool, grid: dict, runs: int, task: str) -> dict:
    from florence2_runtime import Florence2
    from florence2_runtime.cli.bench import BenchOptions, run_bench

    model = Florence2.from_pretrained(folder, providers=provider, io_binding=io_binding)
    out = {"providers": model.providers}
    for n in grid["tokens"]:
        for k in grid["beams"]:
            for b in grid["batch"]:
                report = run_bench(
                    model, BenchOptions(task=task, tokens=n, beams=k, batch=b, runs=runs, warmup=1)
                )
                out[f"{n}-{k}-{b}"] = report.summary()
    return out


def markdown(result: dict) -> str:
    lines = [
        f"# GPU benchmark: {result['device']}",
        "",
        f"{result['date']}; provider {result['provider']}; onnxruntime {result['onnxruntime']}; "
        f"{result['runs']} run(s) per config after one warm-up; task {result['task']}, forced N new tokens.",
        "",
        "Times in ms (medians). `io` = IO binding (KV cache on the device).",
        "",
    ]
    for size, sides in result["models"].items():
        lines += [
            f"## {size}",
            "",
            "| side | N | beams | batch | preprocess | vision | text enc | first step | per token | end to end "
            "| tokens/s | vs transformers |",
            "|" + "---|" * 12,
        ]
        ref = sides.get("transformers", {})
        for side, rows in sides.items():
            if side == "transformers":
                continue
            for key, s in rows.items():
                if key == "providers":
                    continue
                n, k, b = key.split("-")
                ratio = f"{ref[key] / s['end_to_end']:.2f}x" if key in ref else ""
                lines.append(
                    f"| {side} | {n} | {k} | {b} | "
                    + " | ".join(
                        f"{s[x] * 1e3:.1f}"
                        for x in (
                            "preprocess",
                            "vision_encoder",
                            "text_encoder",
                            "first_step",
                            "per_token",
                            "end_to_end",
                        )
                    )
                    + f" | {s['tokens_per_second']:.1f} | {ratio} |"
                )
        for key, t in ref.items():
            n, k, b = key.split("-")
            lines.append(f"| transformers | {n} | {k} | {b} | | | | | | {t * 1e3:.1f} | | |")
        lines.append("")
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description="GPU latency benchmark of the runtime (and transformers on the same GPU)"
    )
    p.add_argument("--models", nargs="+", default=["base", "large"], choices=["base", "large"])
    p.add_argument("--provider", default="cuda", help="cuda (default), tensorrt or cpu")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--task", default="<OD>")
    p.add_argument("--no-fp16", action="store_true", help="fp32 only")
    p.add_argument(
        "--reference",
        choices=["auto", "yes", "no"],
        default="auto",
        help="time transformers on the same device (auto: when torch sees a GPU)",
    )
    p.add_argument(
        "--smoke", action="store_true", help="tiny model, CPU provider, tiny grid (checks the script)"
    )
    p.add_argument("--cache", default=str(CACHE))
    p.add_argument("--out", default=str(RESULTS))
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    import onnxruntime

    grid, sizes, provider, runs = GRID, args.models, args.provider, args.runs
    if args.smoke:
        grid, sizes, provider, runs = SMOKE, ["tiny"], "cpu", 1
    cache = Path(args.cache)
    reference = args.reference == "yes"
    if args.reference == "auto" and not args.smoke:
        try:
            import torch

            reference = torch.cuda.is_available()
        except ImportError:
            reference = False
    result = {
        "device": device_name(provider),
        "provider": provider,
        "onnxruntime": onnxruntime.__version__,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "runs": runs,
        "task": args.task,
        "grid": grid,
        "models": {},
    }
    for size in sizes:
        checkpoint = cached_checkpoint(size, cache)
        fp32 = cached_export(checkpoint, "fp32", cache, size)
        sides = {
            "fp32 io": bench_folder(fp32, provider, True, grid, runs, args.task),
            "fp32": bench_folder(fp32, provider, False, grid, runs, args.task),
        }
        if not args.no_fp16 and not args.smoke:
            sides["fp16 io"] = bench_folder(
                fp16_folder(fp32, cache, size), provider, True, grid, runs, args.task
            )
        if reference or args.smoke:
            sides["transformers"] = reference_times(
                checkpoint, "cuda" if reference else "cpu", grid, runs, args.task
            )
        result["models"][size] = sides
        log(f"{size}: done")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "gpu-" + re.sub(r"[^a-z0-9]+", "-", result["device"].lower()).strip("-")
    (out / f"{stem}.json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    (out / f"{stem}.md").write_text(markdown(result), encoding="utf-8")
    print(markdown(result))
    log(f"wrote {out / stem}.json and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
