"""CPU benchmark: transformers (fp32 and bfloat16) vs the ONNX runtime on full-size random-weight Florence-2.

    python benchmarks/cpu.py --model base             # full grid, 2 threads, results in benchmarks/results/
    python benchmarks/cpu.py --smoke --out /tmp/x     # tiny model, a few seconds (CI)

Builds the checkpoint from the real config with random weights (speed does not depend on the weight
values) and exports it with the project's exporter, both cached under ``benchmarks/.cache/``. Sides:
transformers in fp32 (its default attention) and in bfloat16 with eager and sdpa attention (what
Roboflow's inference runs on a CPU), and the runtime's variants (fp32, int8, and bf16: the fp32 export
with OpenVINO's bf16 on the encoders, where the CPU has it). Each side runs in its own long-lived worker
process (``benchmarks/worker.py``) so that its peak RSS is its own; the parent rotates requests between
them (every side goes first in turn) so that machine drift hits all. Every generate call is forced to exactly N new tokens (``min_new_tokens = max_new_tokens = N``).
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
# transformers sides: DTYPE[-ATTN] (no ATTN: transformers' default, sdpa for Florence-2)
TRANSFORMERS_SIDES = ("fp32", "bf16-eager", "bf16-sdpa")
# runtime variants that are a compute precision on another export: label -> (export dtype,
# Florence2.from_pretrained keywords)
COMPUTE_VARIANTS = {"bf16": ("fp32", {"precision": "bf16"})}
DEFAULT_VARIANTS = ("fp32", "int8", "bf16")
BF16_TARGET = 2.0  # the fastest qualifying variant vs transformers bf16, 20 tokens x 3 beams (issue #28)
PRECISION_RESULTS = RESULTS / "precision_tiny.json"  # which variants keep task scores (precision_tiny.py)
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
    """``"int8"`` -> ("int8", "int8"); ``"fp32=/path/to/folder"`` -> ("fp32", "/path/to/folder");
    ``"bf16"`` -> ("bf16", "fp32"): the export a compute variant (:data:`COMPUTE_VARIANTS`) runs on."""
    label, _, target = variant.partition("=")
    if target:
        return label, target
    return variant, COMPUTE_VARIANTS.get(variant, (variant, {}))[0]


def parse_transformers(spec: str) -> tuple[str, str | None]:
    """``"bf16-eager"`` -> ("bf16", "eager"); ``"fp32"`` -> ("fp32", None): transformers' default attention."""
    dtype, _, attn = spec.partition("-")
    if dtype not in ("fp32", "bf16") or attn not in ("", "eager", "sdpa"):
        raise SystemExit(f"--transformers: DTYPE[-ATTN] with DTYPE fp32/bf16, ATTN eager/sdpa; got {spec!r}")
    return dtype, attn or None


def unavailable(label: str) -> str | None:
    """Why runtime variant ``label`` cannot run on this machine (bf16: no openvino, or no bf16 CPU), or None."""
    if COMPUTE_VARIANTS.get(label, ("", {}))[1].get("precision") != "bf16":
        return None
    from florence2_runtime.engine import openvino

    try:
        openvino.check_precision("bf16")
    except Exception as e:  # MissingDependencyError, OpenVINOError
        return str(e)
    return None


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

    def __init__(
        self,
        label: str,
        side: str,
        model: Path,
        threads: int,
        images: list[Path],
        extra: tuple[str, ...] = (),
    ):
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
            *extra,
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
    for name in ("torch", "transformers", "openvino"):
        with contextlib.suppress(ImportError):
            versions[name] = __import__(name).__version__.split("-")[0]
    capabilities = None
    with contextlib.suppress(Exception):  # no openvino: the bf16 side is skipped and says why
        from florence2_runtime.engine.openvino import cpu_capabilities

        capabilities = sorted(cpu_capabilities())
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
        "openvino_cpu_capabilities": capabilities,
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
    skipped = {}
    variants, precisions = {}, {}
    for label, target in map(parse_variant, args.variants):
        why = unavailable(label)
        if why:
            log(f"runtime-{label} skipped: {why}")
            skipped[f"runtime-{label}"] = why
            continue
        variants[label] = cached_export(checkpoint, target, cache, size)
        precisions[label] = COMPUTE_VARIANTS.get(label, (None, {}))[1]
    images = bench_images(cache)
    weight_bytes = {v: decoder_weight_bytes(folder) for v, folder in variants.items()}
    floors = {v: [] for v in variants}

    def measure_floors() -> None:
        for v, nbytes in weight_bytes.items():
            floors[v].append(streaming_floor(nbytes, args.threads))

    measure_floors()
    log("starting workers ...")
    workers = {}
    for spec in [] if args.no_transformers else args.transformers:
        dtype, attn = parse_transformers(spec)
        extra = ("--dtype", dtype) + (("--attn", attn) if attn else ())
        name = f"transformers-{spec}"
        workers[name] = Worker(name, "transformers", checkpoint, args.threads, images, extra)
    for v, folder in variants.items():
        extra = ("--kwargs", json.dumps(precisions[v])) if precisions[v] else ()
        workers[f"runtime-{v}"] = Worker(f"runtime-{v}", "runtime", folder, args.threads, images, extra)
    load_seconds = {name: w.ready["load_seconds"] for name, w in workers.items()}
    rss_after_load = {name: w.ready["peak_rss"] for name, w in workers.items()}
    side_info = {name: w.ready.get("info", {}) for name, w in workers.items()}
    reference = next((n for n in workers if n.startswith("transformers-fp32")), None)
    bf16_references = [n for n in workers if n.startswith("transformers-bf16")]

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
        reference_ids = answers[reference]["ids"] if reference else None
        for name, answer in answers.items():
            if reference_ids is not None and answer["ids"] != reference_ids:
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
        "reference": reference,  # transformers fp32: the speed-ups and the token-id check
        "bf16_references": bf16_references,  # transformers bf16: the fastest of them per config
        "side_info": side_info,
        "skipped": skipped,
        "load_seconds": load_seconds,
        "peak_rss": peak_rss,
        "peak_rss_after_load": rss_after_load,
        "decoder_weight_bytes": weight_bytes,
        "floor_seconds": {v: min(f) for v, f in floors.items()},
        "floor_samples": floors,
        "ids_mismatch_vs_reference": mismatches,
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
    "cpu_seconds",
)


def summarise(result: dict) -> dict:
    """Medians per side and config, spread of end to end, speed-ups (vs transformers fp32, and vs the
    fastest transformers bf16 side of each config) and the targets."""
    summary: dict = {"sides": {}, "speedup": {}, "speedup_bf16": {}, "bf16_reference": {}, "targets": {}}
    for name, per_config in result["samples"].items():
        summary["sides"][name] = {}
        for key, runs in per_config.items():
            e2e = sorted(t["end_to_end"] for t in runs)
            s = {k: statistics.median(t.get(k, 0.0) for t in runs) for k in STAGE_KEYS}
            s["end_to_end_min"], s["end_to_end_max"] = e2e[0], e2e[-1]
            s["end_to_end_spread"] = (e2e[-1] - e2e[0]) / s["end_to_end"] if s["end_to_end"] else 0.0
            s["per_token_min"] = min(t["per_token"] for t in runs)
            summary["sides"][name][key] = s
    sides, reference = summary["sides"], result.get("reference")
    hf = sides.get(reference) if reference else None
    for name, per_config in sides.items():
        if name == reference or hf is None:
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
    bf16 = [n for n in result.get("bf16_references", []) if n in sides]
    if bf16:
        keys = next(iter(sides.values())).keys()
        fastest = {key: min(bf16, key=lambda n: sides[n][key]["end_to_end"]) for key in keys}
        summary["bf16_reference"] = fastest
        for name, per_config in sides.items():
            if name.startswith("transformers"):
                continue
            summary["speedup_bf16"][name] = {
                key: sides[fastest[key]][key]["end_to_end"] / s["end_to_end"] for key, s in per_config.items()
            }
    if "runtime-fp32" in sides and hf is not None:
        summary["targets"] = evaluate_targets(result, summary)
    if "n20_k3_b1" in summary["bf16_reference"]:
        summary["targets"]["bf16_2x"] = bf16_target(summary)
    return summary


def qualifying_variants(path: Path = PRECISION_RESULTS) -> tuple[dict[str, float], float | None]:
    """({runtime variant: task-score change on the toy}, transformers bf16's change) from
    ``precision_tiny.json`` (``benchmarks/precision_tiny.py``); ({}, None) without it."""
    if not path.is_file():
        return {}, None
    rows = json.loads(path.read_text(encoding="utf-8"))
    changes = {name: r["overall"].get("score_change") for name, r in rows.items() if "overall" in r}
    return {k: v for k, v in changes.items() if v is not None}, changes.get("transformers-bf16")


def bf16_target(summary: dict, key: str = "n20_k3_b1") -> dict:
    """The issue's target: the fastest runtime variant whose task-score change on the toy is no worse than
    transformers bf16's (or than fp32's: none) is at least 2x faster than the fastest transformers bf16 side."""
    changes, hf_change = qualifying_variants()
    floor = None if hf_change is None else min(hf_change, 0.0)
    speed = {name: per[key] for name, per in summary["speedup_bf16"].items() if key in per}

    def qualifies(name: str) -> bool | None:
        label = name.removeprefix("runtime-")
        if label == "fp32":
            return True  # the reference of the accuracy table: no change by definition
        if floor is None or label not in changes:
            return None
        return changes[label] >= floor - 1e-9

    ok = [n for n in speed if qualifies(n)]
    best = max(ok, key=speed.get) if ok else None
    value = speed[best] if best else None
    detail = ", ".join(
        f"{n} {v:.2f}x ({ {True: 'keeps scores', False: 'loses scores', None: 'not judged'}[qualifies(n)] })"
        for n, v in sorted(speed.items(), key=lambda kv: -kv[1])
    )
    return {
        "description": f"fastest variant keeping task scores vs transformers bf16 "
        f"({summary['bf16_reference'][key]}), 20 tokens, 3 beams (batch 1)",
        "value": value,
        "target": BF16_TARGET,
        "kind": "min",
        "met": None if value is None else value >= BF16_TARGET,
        "detail": f"{best}; " + detail if best else detail,
        "variant": best,
    }


def evaluate_targets(result: dict, summary: dict) -> dict:
    rt = summary["sides"]["runtime-fp32"]
    speed = summary["speedup"].get("runtime-fp32", {})
    floor = result["floor_seconds"]["fp32"]
    reference = result["reference"]
    greedy_key = next((k for k in ("n128_k1_b1", "n20_k1_b1") if k in rt), None)
    values = {
        "speedup_128_3": speed.get("n128_k3_b1", {}).get("end_to_end"),
        "speedup_20_3": speed.get("n20_k3_b1", {}).get("end_to_end"),
        "greedy_token_vs_floor": rt[greedy_key]["per_token"] / floor if greedy_key else None,
        "rss_ratio": result["peak_rss"]["runtime-fp32"] / result["peak_rss"][reference],
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
    rt, hf = sides["runtime-fp32"], sides[result["reference"]]
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
    if key == "rss_ratio":
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
        f"CPU flags (SIMD): {' '.join(m['cpu'].get('simd', [])) or 'unknown'}; OpenVINO's CPU capabilities: "
        f"{', '.join(m.get('openvino_cpu_capabilities') or []) or 'n/a (openvino not installed)'}.",
        "",
        "Sides: "
        + "; ".join(
            f"{name} ({', '.join(f'{k} {v}' for k, v in info.items())})" if info else name
            for name, info in result.get("side_info", {}).items()
        )
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
    for name, why in result.get("skipped", {}).items():
        lines += [f"Not measured: {name}: {why}", ""]
    if any(result["ids_mismatch_vs_reference"].values()):
        lines += [
            f"Calls whose token ids differ from {result['reference']}'s (float rounding on random weights; "
            "bf16 and int8 change them by design): "
            + ", ".join(f"{n} {c}" for n, c in result["ids_mismatch_vs_reference"].items())
            + ".",
            "",
        ]

    lines += [
        "## End to end",
        "",
        f"Speed-ups: against {result['reference']}, and against the faster transformers bf16 side of "
        "the same config (the fastest choice transformers offers on a CPU). CPU s: the worker's CPU "
        "seconds per call, every thread's (spin-waiting included): with `--threads 1` on a busy machine "
        "they compare the work where wall times cannot.",
        "",
        "| N | beams | batch | side | end to end ms | spread | tokens/s | CPU s | vs transformers fp32 | "
        "vs transformers bf16 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in result["configs"]:
        for name, per_config in summary["sides"].items():
            s = per_config[c["key"]]
            sp = summary["speedup"].get(name, {}).get(c["key"], {}).get("end_to_end")
            sb = summary["speedup_bf16"].get(name, {}).get(c["key"])
            lines.append(
                f"| {c['tokens']} | {c['beams']} | {c['batch']} | {name} | {s['end_to_end'] * 1e3:.0f} | "
                f"{s['end_to_end_spread'] * 100:.0f}% | {s['tokens_per_second']:.1f} | {s['cpu_seconds']:.2f} | "
                f"{'' if sp is None else f'{sp:.2f}x'} | {'' if sb is None else f'{sb:.2f}x'} |"
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
    hatches = ["", "//", "..", "xx", "\\\\", "++", "oo", "--"]
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
        default=list(DEFAULT_VARIANTS),
        help="runtime variants: export dtypes (fp32, int8, fp16, ...), bf16 (the fp32 export with "
        "precision='bf16': OpenVINO on the encoders; skipped where the CPU or openvino lacks it) or "
        "LABEL=FOLDER of an exported model (default: fp32 int8 bf16)",
    )
    p.add_argument(
        "--transformers",
        nargs="+",
        default=list(TRANSFORMERS_SIDES),
        help="transformers sides, DTYPE[-ATTN]: fp32 or bf16, eager or sdpa attention (none: transformers' "
        "default, sdpa); default: fp32 bf16-eager bf16-sdpa",
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
