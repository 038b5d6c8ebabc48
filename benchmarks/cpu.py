"""CPU benchmark: transformers vs the ONNX runtime on full-size random-weight Florence-2 models.

    python benchmarks/cpu.py --model base             # full grid, 2 threads, results in benchmarks/results/
    python benchmarks/cpu.py --smoke --out /tmp/x     # tiny model, a few seconds (CI)

Builds the checkpoint from the real config with random weights (speed does not depend on the weight
values) and exports it with the project's exporter, both cached under ``benchmarks/.cache/``. Each side
runs in its own long-lived worker process (``benchmarks/worker.py``) so that its peak RSS is its own;
the parent alternates requests between them (the order flips every time) so that machine drift hits
both. Every generate call is forced to exactly N new tokens (``min_new_tokens = max_new_tokens = N``).
The per-token floor -- the time this machine takes to stream the decoder's weight bytes once -- is
measured in the same run. Writes ``cpu-<model>.json``, ``cpu-<model>.md`` and ``cpu-<model>.png``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
CACHE = HERE / ".cache"
RESULTS = HERE / "results"
COMPLETE = ".complete"  # marker written once a cached checkpoint / export is whole
IMAGE_SIZES = [(640, 480), (480, 640), (800, 600), (512, 512)]  # (width, height), cycled over the batch

# Grids per model: the full grid for base; large is reduced (3.1 GB of fp32 weights, 2 cores).
GRIDS = {
    "tiny": dict(tokens=[20, 128], beams=[1, 3], batch=[1, 4], runs=3),
    "base": dict(tokens=[20, 128], beams=[1, 3], batch=[1, 4], runs=3),
    "large": dict(tokens=[20, 128], beams=[3], batch=[1], runs=2),
}
SMOKE = dict(tokens=[4], beams=[1, 2], batch=[1, 2], runs=1)
# The targets (base, fp32, 2 threads): (key, description, threshold, "min" | "max").
TARGETS = [
    ("speedup_128_3", "end-to-end speed-up, 128 tokens, 3 beams (batch 1)", 2.5, "min"),
    ("speedup_20_3", "end-to-end speed-up, 20 tokens, 3 beams (batch 1)", 1.3, "min"),
    (
        "greedy_token_vs_floor",
        "greedy per-token decode / weight-streaming floor (128 tokens, batch 1)",
        1.5,
        "max",
    ),
    ("rss_ratio", "peak RSS runtime / transformers", 0.8, "max"),
]


# ----------------------------------------------------------------------------- models


def cached_checkpoint(size: str, cache: Path) -> Path:
    """A random-weight transformers checkpoint of ``size`` (real config), built once."""
    folder = cache / size / "checkpoint"
    if not (folder / COMPLETE).exists():
        from florence2_export.toy.tiny import write_tiny_checkpoint

        log(f"building the {size} random-weight checkpoint in {folder} ...")
        write_tiny_checkpoint(folder, size=size)
        (folder / COMPLETE).touch()
    return folder


def parse_variant(variant: str) -> tuple[str, str]:
    """``"int8"`` -> ("int8", "int8"); ``"fp32=/path/to/folder"`` -> ("fp32", "/path/to/folder")."""
    label, _, target = variant.partition("=")
    return (label, target) if target else (variant, variant)


def cached_export(checkpoint: Path, variant: str, cache: Path, size: str) -> Path:
    """The exported model folder for ``variant``: a dtype name ("fp32", "int8", ...) or an existing folder."""
    if Path(variant).is_dir():
        return Path(variant)
    folder = cache / size / variant
    if not (folder / COMPLETE).exists():
        from florence2_export import export

        log(f"exporting {checkpoint} as {variant} to {folder} ...")
        kwargs = {} if variant == "fp32" else {"dtype": variant}
        try:
            export(checkpoint, folder, overwrite=True, quiet=True, **kwargs)
        except TypeError as e:
            raise SystemExit(f"the exporter cannot write variant {variant!r} yet ({e})") from None
        (folder / COMPLETE).touch()
    return folder


def decoder_weight_bytes(model_folder: Path) -> int:
    """Bytes of the decoder graph (weights dominate; external data files included)."""
    onnx_dir = model_folder / "onnx"
    return sum(p.stat().st_size for p in onnx_dir.glob("decoder.onnx*") if p.is_file())


def bench_images(cache: Path) -> list[Path]:
    """The benchmark's images as PNG files (both sides load the same files)."""
    from florence2_runtime.cli.bench import generated_image

    folder = cache / "images"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (w, h) in enumerate(IMAGE_SIZES):
        path = folder / f"image{i}_{w}x{h}.png"
        if not path.exists():
            generated_image(w, h, seed=i).save(path)
        paths.append(path)
    return paths


# ----------------------------------------------------------------------------- floor


def streaming_floor(nbytes: int, threads: int, repeats: int = 5) -> float:
    """Best time (s) to read ``nbytes`` once with ``threads`` threads, summing float32 chunks.

    numpy releases the GIL inside the reduction, so the chunks are read in parallel.
    """
    buf = np.ones(max(nbytes // 4, threads), dtype=np.float32)
    chunks = np.array_split(buf, threads)
    best = float("inf")
    for _ in range(repeats):
        workers = [threading.Thread(target=np.add.reduce, args=(c,)) for c in chunks]
        t = time.perf_counter()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        best = min(best, time.perf_counter() - t)
    return best


# ----------------------------------------------------------------------------- workers


class Worker:
    """A worker subprocess speaking JSON lines."""

    def __init__(self, label: str, side: str, model: Path, threads: int, images: list[Path]):
        self.label = label
        env = {
            **os.environ,
            "OMP_NUM_THREADS": str(threads),
            "MKL_NUM_THREADS": str(threads),
            "TOKENIZERS_PARALLELISM": "false",
            "PYTHONUNBUFFERED": "1",
        }
        cmd = [
            sys.executable,
            str(HERE / "worker.py"),
            side,
            str(model),
            "--threads",
            str(threads),
            "--images",
            *map(str, images),
        ]
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            stderr=subprocess.DEVNULL if not os.environ.get("BENCH_VERBOSE") else None,
        )
        self.ready = self._read()
        self.peak_rss = self.ready["peak_rss"]

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(
                f"{self.label} worker died (exit code {self.proc.wait()}); "
                "set BENCH_VERBOSE=1 to see its stderr"
            )
        return json.loads(line)

    def request(self, **request) -> dict:
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        answer = self._read()
        self.peak_rss = answer["peak_rss"]
        return answer

    def close(self) -> int:
        self.proc.stdin.write(json.dumps({"quit": True}) + "\n")
        self.proc.stdin.flush()
        self.peak_rss = self._read()["peak_rss"]
        self.proc.wait()
        return self.peak_rss


@dataclass(frozen=True)
class Config:
    tokens: int
    beams: int
    batch: int

    @property
    def key(self) -> str:
        return f"n{self.tokens}_k{self.beams}_b{self.batch}"


# ----------------------------------------------------------------------------- machine


def machine_description(threads: int) -> dict:
    """CPU model, cores, memory, load and library versions."""
    import onnxruntime

    cpu = {}
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key in ("model name", "cpu MHz", "cache size") and key not in cpu:
            cpu[key] = value.strip()
        if key == "flags" and "flags" not in cpu:
            cpu["simd"] = sorted(f for f in value.split() if f.startswith(("avx", "amx", "fma", "sse4")))
    mem = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("MemTotal", "MemAvailable"):
            mem[key] = int(value.split()[0]) * 1024
    versions = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "onnxruntime": onnxruntime.__version__,
    }
    for name in ("torch", "transformers"):
        with contextlib.suppress(ImportError):
            versions[name] = __import__(name).__version__
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        commit = ""
    return {
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)),
        "memory": mem,
        "platform": platform.platform(),
        "versions": versions,
        "threads": threads,
        "load_average_start": os.getloadavg(),
        "git_commit": commit,
    }


# ----------------------------------------------------------------------------- run


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run_benchmark(args) -> dict:
    grid = SMOKE if args.smoke else GRIDS[args.model]
    size = "tiny" if args.smoke else args.model
    tokens, beams, batches = (
        args.tokens or grid["tokens"],
        args.beams or grid["beams"],
        args.batch or grid["batch"],
    )
    runs = args.runs or grid["runs"]
    configs = [Config(n, k, b) for b, k, n in itertools.product(batches, beams, tokens)]
    cache = Path(args.cache)
    started = time.perf_counter()
    machine = machine_description(args.threads)

    checkpoint = Path(args.checkpoint) if args.checkpoint else cached_checkpoint(size, cache)
    variants = {
        label: cached_export(checkpoint, target, cache, size)
        for label, target in map(parse_variant, args.variants)
    }
    images = bench_images(cache)
    weight_bytes = {v: decoder_weight_bytes(folder) for v, folder in variants.items()}
    floors = {v: [] for v in variants}

    def measure_floors() -> None:
        for v, nbytes in weight_bytes.items():
            floors[v].append(streaming_floor(nbytes, args.threads))

    measure_floors()
    log("starting workers ...")
    workers = {}
    if not args.no_transformers:
        workers["transformers"] = Worker("transformers", "transformers", checkpoint, args.threads, images)
    for v, folder in variants.items():
        workers[f"runtime-{v}"] = Worker(f"runtime-{v}", "runtime", folder, args.threads, images)
    load_seconds = {name: w.ready["load_seconds"] for name, w in workers.items()}
    rss_after_load = {name: w.ready["peak_rss"] for name, w in workers.items()}

    smallest = min(configs, key=lambda c: (c.batch * c.beams * c.tokens, c.key))
    for w in workers.values():  # first-call costs (thread pools, allocators) out of the way
        w.request(task=args.task, tokens=smallest.tokens, beams=smallest.beams, batch=smallest.batch)
    samples: dict[str, dict[str, list[dict]]] = {name: {c.key: [] for c in configs} for name in workers}
    mismatches: dict[str, int] = {name: 0 for name in workers}
    names = list(workers)
    total = (args.warmup + runs) * len(configs)
    for step, (r, config) in enumerate(itertools.product(range(args.warmup + runs), configs)):
        order = (
            names[step % len(names) :] + names[: step % len(names)]
        )  # rotate: every side goes first in turn
        answers = {}
        for name in order:
            answers[name] = workers[name].request(
                task=args.task, tokens=config.tokens, beams=config.beams, batch=config.batch
            )
        reference = answers.get("transformers")
        for name, answer in answers.items():
            if reference is not None and answer["ids"] != reference["ids"]:
                mismatches[name] += 1
            if r >= args.warmup:
                samples[name][config.key].append(answer["times"])
        e2e = ", ".join(f"{n} {a['times']['end_to_end']:.2f}s" for n, a in answers.items())
        log(
            f"[{step + 1}/{total}] {'warm-up' if r < args.warmup else f'run {r - args.warmup + 1}'} "
            f"{config.key}: {e2e}"
        )
        if step % len(configs) == len(configs) - 1:
            measure_floors()
    peak_rss = {name: w.close() for name, w in workers.items()}
    measure_floors()
    machine["load_average_end"] = os.getloadavg()

    return {
        "model": size,
        "task": args.task,
        "threads": args.threads,
        "runs": runs,
        "warmup": args.warmup,
        "smoke": bool(args.smoke),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "seconds": time.perf_counter() - started,
        "command": " ".join(["python", "benchmarks/cpu.py", *sys.argv[1:]]),
        "machine": machine,
        "configs": [c.__dict__ | {"key": c.key} for c in configs],
        "sides": names,
        "load_seconds": load_seconds,
        "peak_rss": peak_rss,
        "peak_rss_after_load": rss_after_load,
        "decoder_weight_bytes": weight_bytes,
        "floor_seconds": {v: min(f) for v, f in floors.items()},
        "floor_samples": floors,
        "ids_mismatch_vs_transformers": mismatches,
        "samples": samples,
    }


# ----------------------------------------------------------------------------- summaries

STAGE_KEYS = (
    "preprocess",
    "vision_encoder",
    "text_encoder",
    "first_step",
    "per_token",
    "end_to_end",
    "decoder_run",
    "kv_reorder",
    "bookkeeping",
    "tokens_per_second",
)


def summarise(result: dict) -> dict:
    """Medians per side and config, spread of end-to-end, speed-ups and the targets."""
    summary: dict = {"sides": {}, "speedup": {}, "targets": {}}
    for name, per_config in result["samples"].items():
        summary["sides"][name] = {}
        for key, runs in per_config.items():
            e2e = sorted(t["end_to_end"] for t in runs)
            s = {k: statistics.median(t[k] for t in runs) for k in STAGE_KEYS}
            s["end_to_end_min"], s["end_to_end_max"] = e2e[0], e2e[-1]
            s["end_to_end_spread"] = (e2e[-1] - e2e[0]) / s["end_to_end"] if s["end_to_end"] else 0.0
            s["per_token_min"] = min(t["per_token"] for t in runs)
            summary["sides"][name][key] = s
    hf = summary["sides"].get("transformers")
    for name, per_config in summary["sides"].items():
        if name == "transformers" or hf is None:
            continue
        summary["speedup"][name] = {
            key: {
                "end_to_end": hf[key]["end_to_end"] / s["end_to_end"],
                "per_token": hf[key]["per_token"] / s["per_token"] if s["per_token"] else None,
                "vision_encoder": hf[key]["vision_encoder"] / s["vision_encoder"],
                "text_encoder": hf[key]["text_encoder"] / s["text_encoder"],
            }
            for key, s in per_config.items()
        }
    if "runtime-fp32" in summary["sides"]:
        summary["targets"] = evaluate_targets(result, summary)
    return summary


def evaluate_targets(result: dict, summary: dict) -> dict:
    rt = summary["sides"]["runtime-fp32"]
    speed = summary["speedup"].get("runtime-fp32", {})
    floor = result["floor_seconds"]["fp32"]
    greedy_key = next((k for k in ("n128_k1_b1", "n20_k1_b1") if k in rt), None)
    values = {
        "speedup_128_3": speed.get("n128_k3_b1", {}).get("end_to_end"),
        "speedup_20_3": speed.get("n20_k3_b1", {}).get("end_to_end"),
        "greedy_token_vs_floor": rt[greedy_key]["per_token"] / floor if greedy_key else None,
        "rss_ratio": (
            result["peak_rss"]["runtime-fp32"] / result["peak_rss"]["transformers"]
            if "transformers" in result["peak_rss"]
            else None
        ),
    }
    out = {}
    for key, description, threshold, kind in TARGETS:
        v = values[key]
        met = None if v is None else (v >= threshold if kind == "min" else v <= threshold)
        out[key] = {
            "description": description,
            "value": v,
            "target": threshold,
            "kind": kind,
            "met": met,
            "detail": _target_detail(key, result, summary, greedy_key),
        }
    return out


def _target_detail(key: str, result: dict, summary: dict, greedy_key: str | None) -> str:
    """What the target's value is made of: the numbers to look at when it is missed."""
    sides, floor = summary["sides"], result["floor_seconds"]["fp32"]
    rt, hf = sides["runtime-fp32"], sides.get("transformers", {})
    config = {"speedup_128_3": "n128_k3_b1", "speedup_20_3": "n20_k3_b1"}.get(key)
    if config and config in rt and config in hf:
        r, h = rt[config], hf[config]
        return (
            f"vision {h['vision_encoder'] / r['vision_encoder']:.2f}x, text encoder "
            f"{h['text_encoder'] / r['text_encoder']:.2f}x, per token {h['per_token'] / r['per_token']:.2f}x "
            f"({r['per_token'] * 1e3:.0f} vs {h['per_token'] * 1e3:.0f} ms)"
        )
    if key == "greedy_token_vs_floor" and greedy_key:
        r = rt[greedy_key]
        return (
            f"per token {r['per_token'] * 1e3:.1f} ms = decoder graph {r['decoder_run'] * 1e3:.1f} + other "
            f"{r['bookkeeping'] * 1e3:.1f}; floor {floor * 1e3:.1f} ms; "
            f"best run {r['per_token_min'] / floor:.2f}x"
        )
    if key == "rss_ratio" and "transformers" in result["peak_rss"]:
        after = result.get("peak_rss_after_load", {})
        return "after loading: " + ", ".join(f"{n} {b / 2**30:.2f} GiB" for n, b in after.items())
    return ""


def markdown(result: dict, summary: dict) -> str:
    m = result["machine"]
    gib = 2**30
    lines = [
        f"# CPU benchmark: Florence-2-{result['model']} (random weights), {result['threads']} threads",
        "",
        f"{result['date']}, {result['runs']} measured run(s) per config after {result['warmup']} warm-up "
        "round(s), sides "
        f"alternating; {result['seconds'] / 60:.1f} min in all. Command: `{result['command']}`",
        "",
        f"Machine: {m['cpu'].get('model name', '?')}, {m['usable_cpus']} usable CPUs, "
        f"{m['memory'].get('MemTotal', 0) / gib:.0f} GiB RAM, "
        f"load average {m['load_average_start'][0]:.1f} at the "
        f"start and {m['load_average_end'][0]:.1f} at the end; "
        + ", ".join(f"{k} {v}" for k, v in m["versions"].items())
        + ".",
        "",
        "Every call generates exactly N new tokens for each image (`min_new_tokens = max_new_tokens = N`), "
        f"task `{result['task']}`, the checkpoint's other generation settings (no_repeat_ngram_size 3). "
        "Times are medians in ms; spread = (max - min) / median of end to end.",
        "",
    ]
    if summary["targets"]:
        lines += ["## Targets", "", "| target | measured | wanted | met | made of |", "|---|---|---|---|---|"]
        for t in summary["targets"].values():
            v = "n/a" if t["value"] is None else f"{t['value']:.2f}"
            want = ("≥ " if t["kind"] == "min" else "≤ ") + f"{t['target']}"
            met = {True: "yes", False: "**no**", None: "n/a"}[t["met"]]
            if t["met"] is False:
                met += f" ({t['value'] / t['target']:.2f}x the target)"
            lines.append(f"| {t['description']} | {v} | {want} | {met} | {t['detail']} |")
        lines.append("")
    floors = ", ".join(
        f"{v}: {result['decoder_weight_bytes'][v] / 2**20:.0f} MiB in "
        f"{result['floor_seconds'][v] * 1e3:.1f} ms"
        for v in result["floor_seconds"]
    )
    lines += [
        f"Weight-streaming floor (decoder bytes read once, best of "
        f"{len(next(iter(result['floor_samples'].values())))}"
        f" in this run): {floors}.",
        "",
    ]
    lines += [
        "Peak RSS: " + ", ".join(f"{n} {b / gib:.2f} GiB" for n, b in result["peak_rss"].items()) + ".",
        "",
    ]
    if any(result["ids_mismatch_vs_transformers"].values()):
        lines += [
            "Calls whose token ids differ from transformers' (float rounding on random weights): "
            + ", ".join(f"{n} {c}" for n, c in result["ids_mismatch_vs_transformers"].items())
            + ".",
            "",
        ]

    lines += [
        "## End to end",
        "",
        "| N | beams | batch | side | end to end ms | spread | tokens/s | speed-up |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in result["configs"]:
        for name, per_config in summary["sides"].items():
            s = per_config[c["key"]]
            sp = summary["speedup"].get(name, {}).get(c["key"], {}).get("end_to_end")
            lines.append(
                f"| {c['tokens']} | {c['beams']} | {c['batch']} | {name} | {s['end_to_end'] * 1e3:.0f} | "
                f"{s['end_to_end_spread'] * 100:.0f}% | {s['tokens_per_second']:.1f} | "
                f"{'' if sp is None else f'{sp:.2f}x'} |"
            )
    lines += [
        "",
        "## Stages (ms)",
        "",
        "| N | beams | batch | side | preprocess | vision | text enc | first step | per token | "
        "(decoder run) | (bookkeeping) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in result["configs"]:
        for name, per_config in summary["sides"].items():
            s = per_config[c["key"]]
            lines.append(
                f"| {c['tokens']} | {c['beams']} | {c['batch']} | {name} | "
                + " | ".join(
                    f"{s[k] * 1e3:.1f}"
                    for k in (
                        "preprocess",
                        "vision_encoder",
                        "text_encoder",
                        "first_step",
                        "per_token",
                        "decoder_run",
                        "bookkeeping",
                    )
                )
                + " |"
            )
    lines += [
        "",
        "transformers' first step includes computing the cross-attention K/V, which the runtime does in "
        "its text encoder graph; its bookkeeping includes the KV-cache reorder.",
        "",
    ]
    notes = HERE / "results" / f"cpu-{result['model']}-notes.md"
    if notes.is_file() and not result["smoke"]:  # hand-written analysis (profiles, why a target is missed)
        lines += [notes.read_text(encoding="utf-8")]
    return "\n".join(lines)


# stacked segments of the chart: (label, seconds of a summary row)
CHART_SEGMENTS = [
    ("vision encoder", lambda s, n: s["vision_encoder"]),
    ("text encoder", lambda s, n: s["text_encoder"]),
    ("decoding", lambda s, n: s["first_step"] + (n - 1) * s["per_token"]),
    (
        "other (preprocess, ...)",
        lambda s, n: max(
            s["end_to_end"]
            - s["vision_encoder"]
            - s["text_encoder"]
            - s["first_step"]
            - (n - 1) * s["per_token"],
            0.0,
        ),
    ),
]


def chart(result: dict, summary: dict, path: Path) -> bool:
    """Median end to end per config and side, stacked by stage, speed-ups on top; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib is not installed (pip install -e '.[bench]' in the clone): no chart")
        return False
    configs = result["configs"]
    sides = list(summary["sides"])
    fig, ax = plt.subplots(figsize=(max(7, 1.5 * len(configs)), 4.5))
    width = 0.8 / len(sides)
    colours = plt.get_cmap("tab10").colors
    hatches = ["", "//", "..", "xx"]
    x = np.arange(len(configs))
    for i, name in enumerate(sides):
        rows = [summary["sides"][name][c["key"]] for c in configs]
        bottom = np.zeros(len(configs))
        for j, (label, seconds) in enumerate(CHART_SEGMENTS):
            heights = np.array([seconds(r, c["tokens"]) for r, c in zip(rows, configs)])
            ax.bar(
                x + i * width,
                heights,
                width,
                bottom=bottom,
                color=colours[j],
                hatch=hatches[i % len(hatches)],
                edgecolor="white",
                label=label if i == 0 else None,
            )
            bottom += heights
        for xi, c, top in zip(x, configs, bottom):
            speedup = summary["speedup"].get(name, {}).get(c["key"], {}).get("end_to_end")
            text = name.split("-")[0][:2] if speedup is None else f"{speedup:.2f}x"
            ax.text(xi + i * width, top, text, ha="center", va="bottom", fontsize=7)
    ax.set_xticks(x + width * (len(sides) - 1) / 2)
    ax.set_xticklabels([f"N={c['tokens']}\nk={c['beams']}\nb={c['batch']}" for c in configs])
    ax.set_ylabel("end to end, s (median)")
    ax.set_title(
        f"Florence-2-{result['model']}, {result['threads']} threads: bars per config = "
        + " | ".join(f"{n}{' (hatched)' if i else ''}" for i, n in enumerate(sides)),
        fontsize=9,
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_outputs(result: dict, out: Path) -> dict[str, Path]:
    summary = summarise(result)
    result = {**result, "summary": summary}
    out.mkdir(parents=True, exist_ok=True)
    stem = f"cpu-{result['model']}"
    paths = {"json": out / f"{stem}.json", "md": out / f"{stem}.md", "png": out / f"{stem}.png"}
    paths["json"].write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    paths["md"].write_text(markdown(result, summary), encoding="utf-8")
    if not chart(result, summary, paths["png"]):
        del paths["png"]
    return paths


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description="CPU benchmark: transformers vs the ONNX runtime (see benchmarks/README.md)"
    )
    p.add_argument("--model", choices=["base", "large"], default="base")
    p.add_argument("--smoke", action="store_true", help="tiny model, tiny grid, one run (CI)")
    p.add_argument("--threads", type=int, default=2, help="threads for both sides (default 2)")
    p.add_argument("--runs", type=int, help="measured runs per config (default: 3 for base, 2 for large)")
    p.add_argument(
        "--warmup",
        type=int,
        default=1,
        help="unmeasured rounds of the whole grid first (default 1; one call of the smallest config always)",
    )
    p.add_argument("--tokens", type=int, nargs="+", help="N values (default 20 128)")
    p.add_argument("--beams", type=int, nargs="+", help="beam counts (default 1 3; large: 3)")
    p.add_argument("--batch", type=int, nargs="+", help="batch sizes (default 1 4; large: 1)")
    p.add_argument("--task", default="<OD>")
    p.add_argument(
        "--variants",
        nargs="+",
        default=["fp32"],
        help="runtime variants: export dtypes (fp32, int8, fp16, ...) or LABEL=FOLDER of an exported "
        "model (default fp32)",
    )
    p.add_argument("--checkpoint", help="use this transformers checkpoint instead of building a random one")
    p.add_argument("--no-transformers", action="store_true", help="runtime side(s) only")
    p.add_argument("--cache", default=str(CACHE), help="where checkpoints and exports are cached")
    p.add_argument("--out", default=str(RESULTS), help="where the results go (default benchmarks/results)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    result = run_benchmark(args)
    paths = write_outputs(result, Path(args.out))
    print(Path(paths["md"]).read_text(encoding="utf-8"))
    log("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
