"""Several tasks on one image: ``run_tasks`` (one vision encoding, batched prompts) vs one ``run`` per task.

    python benchmarks/tasks.py                       # base, random weights, fp32, 2 threads, 20 new tokens
    python benchmarks/tasks.py --smoke --out /tmp/t  # tiny model, seconds (what tests/benchmarks/test_smoke.py runs)

Both sides run in this one process on the same loaded model, alternating which goes first every run,
after one warm-up of each. Every prompt generates exactly ``--tokens`` new tokens (min = max), with the
checkpoint's other settings (3 beams for Florence-2). The model is the full-size random-weight
architecture that ``benchmarks/cpu.py`` builds and caches (``benchmarks/.cache/``). Target: run_tasks
takes at most 0.5x the time of the separate runs (3 tasks, base, 20 tokens, 2 threads).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from cpu import CACHE, RESULTS, bench_images, cached_checkpoint, cached_export, machine_description

TASKS = ["<CAPTION>", "<OD>", "<OCR>"]
TARGET_RATIO = 0.5


def measure(model, image, tasks: list[str], tokens: int, runs: int) -> dict:
    """Alternating timed runs of both sides; medians, ratio and whether the answers agree."""
    from florence2_runtime.tasks.batch import decoding_options

    gen = dict(max_new_tokens=tokens, min_new_tokens=tokens)
    sides = {
        "separate": lambda: {t: model.run(image, t, **gen)[t] for t in tasks},
        "run_tasks": lambda: model.run_tasks(image, tasks, **gen),
    }
    answers = {name: side() for name, side in sides.items()}  # warm-up, not counted
    times: dict[str, list[float]] = {name: [] for name in sides}
    for i in range(runs):
        order = list(sides) if i % 2 == 0 else list(reversed(sides))
        for name in order:
            start = time.perf_counter()
            sides[name]()
            times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(ts) for name, ts in times.items()}
    ratio = medians["run_tasks"] / medians["separate"]
    return {
        "tasks": tasks,
        "tokens": tokens,
        "num_beams": decoding_options(model).num_beams,
        "runs": runs,
        "times_s": times,
        "median_s": medians,
        "ratio": ratio,
        "target": TARGET_RATIO,
        "met": ratio <= TARGET_RATIO,
        "answers_equal": answers["separate"] == answers["run_tasks"],
    }


def markdown(result: dict) -> str:
    m, cpu = result["machine"], result["machine"]["cpu"]
    lines = [
        f"# Several tasks on one image ({result['model']}, {', '.join(result['tasks'])})",
        "",
        f"CPU: {cpu.get('model name', '?')}, {m['threads']} threads, load average at start "
        f"{', '.join(f'{x:.1f}' for x in m['load_average_start'])}; onnxruntime {m['versions']['onnxruntime']}; "
        f"commit {m['git_commit']}.",
        f"Exactly {result['tokens']} new tokens per prompt, {result['num_beams']} beams, {result['runs']} runs "
        "per side (alternating, after one warm-up).",
        "",
        "| | median | runs |",
        "|---|---|---|",
    ]
    for name, label in (
        ("separate", f"{len(result['tasks'])} separate run() calls"),
        ("run_tasks", "run_tasks (one vision encoding)"),
    ):
        runs = ", ".join(f"{t:.2f}" for t in result["times_s"][name])
        lines.append(f"| {label} | {result['median_s'][name]:.2f} s | {runs} |")
    verdict = "met" if result["met"] else "**missed**"
    lines += [
        "",
        f"Ratio run_tasks / separate: **{result['ratio']:.2f}x** (target <= {result['target']}x: {verdict}). "
        f"Answers equal: {result['answers_equal']}.",
        "",
    ]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--model", default="base", help="checkpoint size to build (base, large) or an exported folder"
    )
    p.add_argument("--tokens", type=int, default=20)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--cache", default=str(CACHE))
    p.add_argument("--out", default=str(RESULTS), help="folder for tasks-<model>.json / .md")
    p.add_argument(
        "--smoke", action="store_true", help="2 tokens, 1 run; the tiny model unless --model is a folder"
    )
    args = p.parse_args(argv)
    from florence2_runtime import Florence2

    size = args.model if Path(args.model).is_dir() or not args.smoke else "tiny"
    cache = Path(args.cache)
    folder = (
        Path(size)
        if Path(size).is_dir()
        else cached_export(cached_checkpoint(size, cache), "fp32", cache, size)
    )
    model = Florence2.from_pretrained(folder, threads=args.threads)
    from PIL import Image

    image = Image.open(bench_images(cache)[0]).convert("RGB")
    tokens, runs = (2, 1) if args.smoke else (args.tokens, args.runs)
    result = {
        "model": Path(size).name if Path(size).is_dir() else size,
        **measure(model, image, TASKS, tokens, runs),
        "machine": machine_description(args.threads),
    }
    result["machine"]["load_average_end"] = os.getloadavg()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"tasks-{result['model']}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    stem.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
