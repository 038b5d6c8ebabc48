"""Labelling throughput: ``florence2 label``'s batched pipeline vs a loop of ``Florence2.run`` calls.

    python benchmarks/label.py                       # base, random weights, fp32, 2 threads, 16 images
    python benchmarks/label.py --smoke --out /tmp/l  # tiny model, seconds (what tests/benchmarks/test_smoke.py runs)

Both sides label the same generated pictures (640x480, 480x640, 800x600, 512x512, cycled) with ``<OD>``
on the same loaded model, in this one process, after one warm-up picture each: "loop" calls
``model.run(path, "<OD>")`` once per picture and keeps the answers (what a hand-written labelling script
or autodistill does; it writes no dataset), "label" is :func:`florence2_runtime.datasets.label` with
``--batch-size`` (pictures read one batch ahead, a batch through the vision encoder at once, the
prompts decoded in batches, images and journal written, the COCO file written at the end). Every prompt
generates exactly ``--tokens`` new tokens (min = max), with the checkpoint's other settings (3 beams for
Florence-2): a random-weight model would otherwise run to 1024 tokens. The model is the full-size
random-weight architecture ``benchmarks/cpu.py`` builds and caches (``benchmarks/.cache/``; an earlier
build there is reused). With several ``--runs`` the sides alternate which goes first. Writes
``label-<model>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from cpu import CACHE, IMAGE_SIZES, RESULTS, cached_checkpoint, cached_export, machine_description

TASK = "<OD>"


def pictures(cache: Path, count: int) -> Path:
    """A folder of ``count`` generated PNG pictures (sizes cycled), built once per count."""
    from florence2_runtime.cli.bench import generated_image

    folder = cache / f"label-images-{count}"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        w, h = IMAGE_SIZES[i % len(IMAGE_SIZES)]
        path = folder / f"p{i:03d}_{w}x{h}.png"
        if not path.exists():
            generated_image(w, h, seed=100 + i).save(path)
    return folder


def measure(model, folder: Path, batch_size: int, tokens: int, runs: int) -> dict:
    """Timed runs of both sides; images per second, and whether their labels agree."""
    from florence2_runtime.datasets import LabelSpec

    gen = dict(max_new_tokens=tokens, min_new_tokens=tokens)
    paths = sorted(folder.iterdir())
    spec = LabelSpec.make(TASK)
    with tempfile.TemporaryDirectory(prefix="florence2-label-bench-") as tmp:
        return _measure(model, folder, paths, spec, Path(tmp), batch_size, tokens, runs, gen)


def _measure(model, folder, paths, spec, work: Path, batch_size, tokens, runs, gen) -> dict:
    from PIL import Image

    from florence2_runtime.datasets import label
    from florence2_runtime.datasets.journal import read_records
    from florence2_runtime.tasks.batch import decoding_options

    def loop() -> dict:
        return {p.name: model.run(p, TASK, **gen) for p in paths}

    def batched(out: Path) -> None:
        label(model, folder, out, batch_size=batch_size, progress="off", **gen)

    model.run(paths[0], TASK, **gen)  # warm-up of both paths, not counted
    batched(work / "warm-up")
    times: dict[str, list[float]] = {"loop": [], "label": []}
    answers: dict = {}
    for i in range(runs):
        for name in ("loop", "label") if i % 2 == 0 else ("label", "loop"):
            start = time.perf_counter()
            if name == "loop":
                answers = loop()
            else:
                batched(work / f"run{i}")
            times[name].append(time.perf_counter() - start)
    records = {Path(r.key).name: r for r in read_records(work / "run0")}
    equal = all(
        list(records[name].detections) == spec.detections([answer], Image.open(folder / name).size)
        for name, answer in answers.items()
    )
    medians = {name: statistics.median(ts) for name, ts in times.items()}
    rate = {name: len(paths) / s for name, s in medians.items()}
    return {
        "task": TASK,
        "images": len(paths),
        "image_sizes": [list(s) for s in IMAGE_SIZES],
        "batch_size": batch_size,
        "tokens": tokens,
        "num_beams": decoding_options(model).num_beams,
        "runs": runs,
        "times_s": times,
        "median_s": medians,
        "images_per_s": rate,
        "speedup": rate["label"] / rate["loop"],
        "labels_equal": equal,
    }


def markdown(result: dict) -> str:
    m, cpu = result["machine"], result["machine"]["cpu"]
    lines = [
        f"# Labelling throughput ({result['model']}, {result['task']}, {result['images']} pictures)",
        "",
        f"CPU: {cpu.get('model name', '?')} ({', '.join(cpu.get('simd', []))}), {m['threads']} threads, "
        f"load average at start {', '.join(f'{x:.1f}' for x in m['load_average_start'])}, at end "
        f"{', '.join(f'{x:.1f}' for x in m['load_average_end'])}; onnxruntime {m['versions']['onnxruntime']}; "
        f"commit {m['git_commit']}.",
        f"Exactly {result['tokens']} new tokens per prompt, {result['num_beams']} beams; "
        f"{result['runs']} run(s) per side after one warm-up picture.",
        "",
        "| side | images/s | seconds |",
        "|---|---|---|",
    ]
    for name, text in (
        ("loop", "a loop of run() calls (answers kept, no dataset written)"),
        ("label", f"florence2 label, --batch-size {result['batch_size']} (COCO dataset written)"),
    ):
        runs = ", ".join(f"{t:.2f}" for t in result["times_s"][name])
        lines.append(f"| {text} | {result['images_per_s'][name]:.3f} | {runs} |")
    lines += [
        "",
        f"label / loop: **{result['speedup']:.2f}x** the images per second. "
        f"Labels equal to the loop's answers: {result['labels_equal']}.",
        "",
    ]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--model", default="base", help="checkpoint size to build (base, large) or an exported folder"
    )
    p.add_argument("--images", type=int, default=16, help="pictures to label (default: 16)")
    p.add_argument("--batch-size", type=int, default=8, help="florence2 label --batch-size (default: 8)")
    p.add_argument("--tokens", type=int, default=20, help="new tokens per prompt, forced (default: 20)")
    p.add_argument("--runs", type=int, default=1, help="timed runs per side (default: 1)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--cache", default=str(CACHE))
    p.add_argument("--out", default=str(RESULTS), help="folder for label-<model>.json / .md")
    p.add_argument(
        "--smoke",
        action="store_true",
        help="4 pictures, 2 tokens, batch 2; the tiny model unless --model is a folder",
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
    count, tokens, batch = (4, 2, 2) if args.smoke else (args.images, args.tokens, args.batch_size)
    load_at_start = os.getloadavg()
    result = {
        "model": Path(size).name if Path(size).is_dir() else size,
        **measure(model, pictures(cache, count), batch, tokens, args.runs),
        "machine": machine_description(args.threads),
    }
    result["machine"]["load_average_start"] = load_at_start
    result["machine"]["load_average_end"] = os.getloadavg()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"label-{result['model']}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    stem.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
