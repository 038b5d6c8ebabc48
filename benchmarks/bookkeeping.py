"""Per-step decoding bookkeeping without a model: this tree's generation against a baseline commit's.

    python benchmarks/bookkeeping.py                       # baseline: main; 20 steps, greedy and 3 beams
    python benchmarks/bookkeeping.py --baseline HEAD~3 --steps 20 128 --beams 1 3 --runs 30 --out results/bookkeeping

"Bookkeeping" is what ``florence2 bench`` reports under that name: everything a decoding step does
besides the decoder graph and the KV-cache reorder (the NaN check, logit filters, log-softmax, beam
search's top-k and hypothesis updates, copies). Here the graph is replaced by synthetic logits (seeded
normal values of std 3, ``--vocab`` wide, 51289 by default as Florence-2's lm_head), so the numbers are
the bookkeeping alone, under the checkpoint's settings (``no_repeat_ngram_size=3``, forced BOS / EOS,
``early_stopping=True``) and with ``min_new_tokens = max_new_tokens`` as ``florence2 bench`` does, so
that every run decodes exactly ``--steps`` tokens.

The baseline's ``florence2_runtime`` is read from git (``git archive``) and imported under another name
in the same process; the two sides run in alternation (the order flipped every run), each over the same
logits, and must produce the same token ids. Per step = (end - start of step 2) / (steps - 1), the
first step (forced BOS, empty past) excluded as in ``florence2 bench``; medians and minima over
``--runs``. This tree is measured with scores off and on (``output_scores``); the baseline, scores off.

``--model DIR`` measures the same on a real exported model instead (e.g. the base architecture that
``cpu.py`` caches in ``benchmarks/.cache/base/fp32``): one image's encoder outputs computed once, then each
side decodes with the model's decoder graph and KV cache, and bookkeeping = per step - decoder graph -
KV reorder, as ``florence2 bench`` splits it. The graph and the reorder are this tree's on every side (they
are not what is compared); only the search code differs.

    python benchmarks/bookkeeping.py --model benchmarks/.cache/base/fp32 --baseline 0007e79 --beams 3 \
        --threads 2 --runs 8 --out benchmarks/results/bookkeeping-base
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from types import ModuleType

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT / "runtime"), str(ROOT / "export")]

from florence2_export.toy.tiny import GENERATION_CONFIG
from florence2_runtime.generation import DecodingOptions, generate_output

# the checkpoints' generation_config.json (Florence-2 base / large and the toy share it)
FLORENCE_GENERATION = GENERATION_CONFIG


def load_baseline(revision: str, into: Path) -> ModuleType:
    """``runtime/florence2_runtime`` at ``revision``, imported as ``florence2_runtime_baseline``."""
    archive = subprocess.run(
        ["git", "archive", revision, "runtime/florence2_runtime"], cwd=ROOT, capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    package = into / "runtime" / "florence2_runtime"
    spec = importlib.util.spec_from_file_location(
        "florence2_runtime_baseline", package / "__init__.py", submodule_search_locations=[str(package)]
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return importlib.import_module("florence2_runtime_baseline.generation")


class SyntheticInference:
    """The ``Inference`` protocol on precomputed logits; records when each step asks for them."""

    def __init__(self, logits: list[np.ndarray]):
        self.steps = logits
        self.starts: list[float] = []

    def logits(self, tokens: np.ndarray) -> np.ndarray:
        self.starts.append(time.perf_counter())
        return self.steps[len(self.starts) - 1]

    def rearrange_kv_cache(self, source_indices: np.ndarray) -> None:
        pass


def run_once(decode, logits: list[np.ndarray]) -> tuple[float, np.ndarray]:
    """(seconds per step after the first, ids) of one decode over ``logits``."""
    inference = SyntheticInference(logits)
    ids = decode(inference)
    end = time.perf_counter()
    return (end - inference.starts[1]) / (len(inference.starts) - 1), ids


def measure(baseline, steps: int, beams: int, batch: int, vocab: int, runs: int, seed: int) -> dict:
    options = DecodingOptions.from_generation_config(
        FLORENCE_GENERATION, num_beams=beams, max_new_tokens=steps, min_new_tokens=steps
    )
    old_options = baseline.DecodingOptions.from_generation_config(
        FLORENCE_GENERATION, num_beams=beams, max_new_tokens=steps, min_new_tokens=steps
    )
    rng = np.random.default_rng(seed)
    logits = [(rng.standard_normal((batch * beams, vocab)) * 3).astype(np.float32) for _ in range(steps)]
    sides = {
        "baseline": lambda inf: baseline.generate(inf, batch, old_options),
        "scores_off": lambda inf: generate_output(inf, batch, options).sequences,
        "scores_on": lambda inf: generate_output(inf, batch, options, output_scores=True).sequences,
    }
    times: dict[str, list[float]] = {name: [] for name in sides}
    ids = {}
    for r in range(runs + 1):  # the first round warms up
        names = list(sides) if r % 2 else list(reversed(sides))
        for name in names:
            seconds, ids[name] = run_once(sides[name], logits)
            if r:
                times[name].append(seconds)
    same = all(np.array_equal(ids["baseline"], ids[name]) for name in sides)
    medians = {name: statistics.median(t) * 1e3 for name, t in times.items()}
    return {
        "steps": steps,
        "beams": beams,
        "batch": batch,
        "vocab": vocab,
        "same_ids": same,
        "median_ms": medians,
        "min_ms": {name: min(t) * 1e3 for name, t in times.items()},
        "speedup": medians["baseline"] / medians["scores_off"],
    }


def measure_model(
    baseline, model_dir: Path, steps: int, beams: int, batch: int, runs: int, threads: int
) -> dict:
    """Per-step bookkeeping (ms) of each side on a real model's decoder: see ``--model``."""
    from florence2_runtime import Florence2
    from florence2_runtime.cli.bench import _TimedInference, generated_image
    from florence2_runtime.model import processor_inputs
    from florence2_runtime.tasks.batch import decoding_options

    model = Florence2.from_pretrained(model_dir, threads=threads)
    forced = {"num_beams": beams, "max_new_tokens": steps, "min_new_tokens": steps}
    options = decoding_options(model, **forced)
    old_options = baseline.DecodingOptions.from_generation_config(model.generation_config, **forced)
    images = [generated_image(640, 480, seed=i) for i in range(batch)]
    pixels, ids, mask = processor_inputs(model, images, ["<OD>"] * batch)
    engine = model.engine
    cross, cross_mask = engine.encode_text(
        ids, mask, engine.encode_images(pixels, to_host=False), to_host=False
    )
    sides = {
        "baseline": lambda inf: baseline.generate(inf, batch, old_options),
        "scores_off": lambda inf: generate_output(inf, batch, options).sequences,
        "scores_on": lambda inf: generate_output(inf, batch, options, output_scores=True).sequences,
    }
    stages = ("bookkeeping", "per_step", "decoder_run")
    times: dict[str, dict[str, list[float]]] = {name: {s: [] for s in stages} for name in sides}
    out = {}
    for r in range(runs + 1):  # the first round warms up
        for name in list(sides) if r % 2 else list(reversed(sides)):
            inference = _TimedInference(engine.decoder(cross, cross_mask, beams), time.perf_counter)
            out[name] = sides[name](inference)
            end = time.perf_counter()
            later = len(inference.starts) - 1
            per_step = (end - inference.starts[1]) / later
            run = sum(inference.run_seconds[1:]) / later
            reorder = sum(inference.reorder_seconds[1:]) / later
            if r:
                for stage, value in zip(stages, (per_step - run - reorder, per_step, run)):
                    times[name][stage].append(value * 1e3)
    return {
        "model": str(model_dir),
        "threads": threads,
        "steps": steps,
        "beams": beams,
        "batch": batch,
        "same_ids": all(np.array_equal(out["baseline"], out[name]) for name in sides),
        "median_ms": {name: statistics.median(t["bookkeeping"]) for name, t in times.items()},
        "min_ms": {name: min(t["bookkeeping"]) for name, t in times.items()},
        "per_step_ms": {name: statistics.median(t["per_step"]) for name, t in times.items()},
        "decoder_run_ms": {name: statistics.median(t["decoder_run"]) for name, t in times.items()},
        "speedup": statistics.median(times["baseline"]["bookkeeping"])
        / statistics.median(times["scores_off"]["bookkeeping"]),
    }


def machine() -> dict:
    cpu = {}
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and key not in cpu:
            cpu[key] = value.strip()
        if key == "flags" and "simd" not in cpu:
            cpu["simd"] = " ".join(
                sorted(f for f in value.split() if f.startswith(("avx512f", "avx2", "amx")))
            )
    return {
        **cpu,
        "logical_cpus": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "load_average": os.getloadavg(),
    }


def report(info: dict, baseline: str, commit: str, runs: int, results: list[dict]) -> str:
    """The results as a Markdown table."""
    lines = [
        f"CPU: {info.get('model name', '?')} [{info.get('simd', '')}], numpy {info['numpy']}, "
        f"Python {info['python']}, load average {', '.join(f'{x:.1f}' for x in info['load_average'])}",
        "",
        f"Baseline: `{baseline}` ({commit}). Milliseconds per step after the first, median (min) of {runs} "
        "runs, alternating in one process over the same synthetic logits.",
        "",
        "| steps | beams | batch | baseline | scores off | scores on | speed-up | ids |",
        "|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        cells = [
            f"{r['median_ms'][n]:.3f} ({r['min_ms'][n]:.3f})" for n in ("baseline", "scores_off", "scores_on")
        ]
        same = "same" if r["same_ids"] else "DIFFERENT"
        lines.append(
            f"| {r['steps']} | {r['beams']} | {r['batch']} | {' | '.join(cells)} | {r['speedup']:.1f}x | {same} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", default="main", help="git revision to compare with (default: main)")
    parser.add_argument("--steps", type=int, nargs="+", default=[20])
    parser.add_argument("--beams", type=int, nargs="+", default=[1, 3])
    parser.add_argument("--batch", type=int, nargs="+", default=[1])
    parser.add_argument("--vocab", type=int, default=51289)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--model", type=Path, help="an exported model folder: its real decoder, not synthetic logits"
    )
    parser.add_argument("--threads", type=int, default=2, help="with --model: intra-op threads (default: 2)")
    parser.add_argument("--out", type=Path, help="also write OUT.json and OUT.md")
    args = parser.parse_args(argv)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", args.baseline], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp:
        baseline = load_baseline(args.baseline, Path(tmp))
        results = [
            measure_model(baseline, args.model, steps, beams, batch, args.runs, args.threads)
            if args.model
            else measure(baseline, steps, beams, batch, args.vocab, args.runs, args.seed)
            for steps in args.steps
            for beams in args.beams
            for batch in args.batch
        ]
    info = machine()
    table = report(info, args.baseline, commit, args.runs, results)
    if args.model:
        table = table.replace(
            "alternating in one process over the same synthetic logits.",
            f"alternating in one process on the decoder of `{args.model}` ({args.threads} threads): a step "
            "minus its decoder graph and KV reorder. Per step (decoder graph) in ms: "
            + "; ".join(
                f"{r['beams']} beam(s): "
                + ", ".join(
                    f"{n} {r['per_step_ms'][n]:.1f} ({r['decoder_run_ms'][n]:.1f})" for n in r["per_step_ms"]
                )
                for r in results
            )
            + ".",
        )
    print(table)
    if args.out:
        args.out.with_suffix(".json").write_text(
            json.dumps(
                {"machine": info, "baseline": args.baseline, "baseline_commit": commit, "results": results},
                indent=1,
            )
            + "\n"
        )
        args.out.with_suffix(".md").write_text(
            f"# Decoding bookkeeping (`benchmarks/bookkeeping.py`)\n\n{table}"
        )
    return 0 if all(r["same_ids"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
