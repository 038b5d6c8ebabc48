"""Precision variants judged on a model that has learned something: the toy florence2-tiny-shapes.

    python benchmarks/precision_tiny.py                       # fp16 and int8 vs fp32, 20 images per task
    python benchmarks/precision_tiny.py --per-task 40 --out benchmarks/results/precision_tiny

Exports the committed checkpoint ``models/florence2-tiny-shapes`` as fp32, fp16 and int8 (cached under
``--cache``), draws a held-out generated set (``florence2_export.toy.tiny_eval.held_out_set``, its own seed),
and for every image runs ``florence2_runtime.cli.compare.compare_image`` (what ``florence2 compare`` does)
between fp32 and each variant, with the models' generation defaults (3 beams) and up to 80 new tokens:

- identical answers: the same generated token ids;
- token agreement: tokens before the first difference / the longer length, summed over the images;
- task-level agreement: the same text and as many ``<loc_>`` tokens, each within ``--max-bins`` bins
  (``tiny_eval.answers_agree``; 5 bins = 0.64 px at 128 px);
- the variant's own task scores against the generator's truth, next to fp32's.

``--variants int8:vision_encoder,int8:text_encoder,int8:decoder`` converts one graph at a time, to find
which graph loses the agreement. ``bf16`` is the fp32 export loaded with ``precision="bf16"`` (OpenVINO's
bfloat16 on the encoders, and on the decoder where the CPU has AMX), ``bf16-encoders`` / ``bf16-all`` the
encoders / every graph in bfloat16 through OpenVINO whatever the CPU. ``transformers-bf16``
(``-eager``) judges transformers itself the same way: the checkpoint in bfloat16 against the checkpoint in
float32 (transformers' default attention, or eager), so each of this runtime's choices sits next to the
choice a user would otherwise make. Each row's task-score change is the mean over the 15 tasks of the
change in the task's first metric (the per-task table's), variant minus its float32 reference. Two controls tell the model's own fragility from a recipe's faults (float
compute throughout, so only the weights change):

- ``noise:EPS``: every float weight matrix of the fp32 graphs multiplied by ``1 + EPS * N(0, 1)`` (seed 0);
- ``weights:BITS:BLOCK``: the weights int8 quantises (constant MatMul / Gemm inputs) rounded to symmetric
  BITS-bit integers with one scale per BLOCK values along the reduced axis (0: one per output column, as
  the int8 recipes), then stored as float32: the error of the weights alone, without activation rounding;
  ``weights:fp16`` rounds every weight matrix to float16 the same way (fp16's weights without its activations).

Prints a Markdown table; ``--out`` also writes ``.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np

from florence2_export import export
from florence2_export.precision import Int8Options, convert_folder
from florence2_export.toy import tiny_eval
from florence2_export.toy.demo import TINY_SHAPES
from florence2_runtime import Florence2
from florence2_runtime.cli.compare import CompareOptions, compare_image

VARIANTS = ("fp16", "int8", "bf16", "bf16-encoders", "transformers-bf16", "transformers-bf16-eager")
ALL_GRAPHS = ["vision_encoder", "text_encoder", "decoder"]
# runtime variants that are a compute precision of the fp32 export: name -> from_pretrained keywords
COMPUTE = {
    "bf16": {"precision": "bf16"},
    "bf16-all": {"providers": [("openvino", {"precision": "bf16", "graphs": ALL_GRAPHS})]},
    "bf16-encoders": {"providers": [("openvino", {"precision": "bf16", "graphs": ALL_GRAPHS[:2]})]},
    "fp32-openvino": {"providers": [("openvino", {"precision": "f32", "graphs": ALL_GRAPHS})]},
}
# transformers against itself: name -> (dtype, attn_implementation; None: transformers' default)
TRANSFORMERS = {"transformers-bf16": ("bf16", None), "transformers-bf16-eager": ("bf16", "eager")}
# recipes tried when int8 misses: name -> Int8Options (converted from the fp32 folder without PyTorch)
RECIPES = {
    "int8-float-lm-head": Int8Options(exclude=Int8Options().exclude + ("/lm_head/",)),
    "int8-per-tensor": Int8Options(per_channel=False),
    # the other weight recipes (florence2_runtime.engine.int8cpu.RECIPES); full-range is right only on CPUs
    # with VNNI / AMX (x86) or on ARM
    "int8-full-range": Int8Options(recipe="full-range"),
    "int8-u8u8": Int8Options(recipe="u8u8"),
    # only the feed-forward MatMuls int8: attention projections, lm_head and the image projection stay float
    "int8-ffn-only": Int8Options(
        exclude=Int8Options().exclude
        + (
            "q_proj",
            "k_proj",
            "v_proj",
            "out_proj",
            "/lm_head/",
            "window_attn/",
            "channel_attn/",
            "image_projection",
        )
    ),
}


def exports(checkpoint: Path, cache: Path, refresh: bool) -> dict[str, Path]:
    folders = {}
    for dtype in ("fp32", "fp16", "int8"):
        out = cache / dtype
        if refresh or not (out / "florence2_config.json").is_file():
            report = export(checkpoint, out, overwrite=True, dtype=dtype)
            if not report.ok:
                raise SystemExit(f"the {dtype} export failed its check")
        folders[dtype] = out
    return folders


def hybrid(folders: dict[str, Path], cache: Path, name: str) -> Path:
    """``DTYPE:GRAPH``: the fp32 folder with only GRAPH taken from the DTYPE export (which graph loses it)."""
    dtype, graph = name.split(":")
    out = cache / name.replace(":", "-")
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(folders["fp32"], out)
    for suffix in (".onnx", ".onnx_data"):
        shutil.copy2(folders[dtype] / "onnx" / f"{graph}{suffix}", out / "onnx" / f"{graph}{suffix}")
    return out


def recipe(folders: dict[str, Path], cache: Path, name: str) -> Path:
    out = cache / name
    convert_folder(folders["fp32"], out, "int8", RECIPES[name], overwrite=True)
    return out


def static_vision(folders: dict[str, Path], cache: Path, name: str) -> Path:
    """``int8-static-vision``: the int8 folder with a statically quantised vision encoder
    (``benchmarks/int8_static.py``), calibrated on 8 shapes scenes from their own seed (30000)."""
    from int8_static import static_vision_folder

    from florence2_export.toy import shapes

    rng = np.random.default_rng(30_000)
    tasks = list(shapes.TASK_SCENES)
    images = [shapes.make_sample(tasks[i % len(tasks)], rng).image for i in range(8)]
    return static_vision_folder(folders["fp32"], folders["int8"], cache / name, images)


def _rewrite_weights(folders: dict[str, Path], cache: Path, name: str, change) -> Path:
    """A copy of the fp32 folder whose graphs' initializers went through ``change(model) -> None``."""
    import onnx

    from florence2_export.graphs import onnxfile
    from florence2_runtime.engine.config import RuntimeConfig
    from florence2_runtime.engine.graphs import native_graphs

    out = cache / name.replace(":", "-")
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(folders["fp32"], out)
    for spec in native_graphs(RuntimeConfig.load(out).dims).values():
        path = out / "onnx" / spec.filename
        model = onnx.load(str(path))
        change(model)
        onnxfile.data_file(path).unlink(missing_ok=True)
        onnx.save(model, str(path))
        onnxfile.split(path)
    return out


def _each_weight_matrix(model, fn) -> None:
    """Replace every float32 weight matrix (>= 2-D, >= 256 values) among ``model``'s initializers by ``fn(w)``."""
    from onnx import numpy_helper

    for i, t in enumerate(model.graph.initializer):
        w = numpy_helper.to_array(t)
        if w.dtype == np.float32 and w.ndim >= 2 and w.size >= 256:
            model.graph.initializer[i].CopyFrom(numpy_helper.from_array(fn(w).astype(np.float32), t.name))


def noisy(folders: dict[str, Path], cache: Path, name: str) -> Path:
    """``noise:EPS``: every weight matrix (:func:`_each_weight_matrix`) times ``1 + EPS * N(0, 1)``."""
    eps = float(name.split(":")[1])
    rng = np.random.default_rng(0)
    perturb = lambda w: w * (1 + eps * rng.standard_normal(w.shape)).astype(np.float32)  # noqa: E731
    return _rewrite_weights(folders, cache, name, lambda model: _each_weight_matrix(model, perturb))


def round_to_bits(w: np.ndarray, bits: int, block: int, axis: int) -> np.ndarray:
    """``w`` rounded to symmetric ``bits``-bit integers times a scale per ``block`` values along ``axis``
    (the reduced one; block 0: one scale for the whole axis, i.e. per output channel), back in float32."""
    moved = np.moveaxis(w, axis, -1)
    k = moved.shape[-1]
    size = block or k
    pad = -k % size
    blocks = np.pad(moved, [(0, 0)] * (moved.ndim - 1) + [(0, pad)]).reshape(*moved.shape[:-1], -1, size)
    top = 2 ** (bits - 1) - 1
    scale = np.abs(blocks).max(axis=-1, keepdims=True) / top
    scale[scale == 0] = 1
    q = np.clip(np.round(blocks / scale), -top, top) * scale
    return np.moveaxis(q.reshape(*moved.shape[:-1], -1)[..., :k], -1, axis).astype(np.float32)


def rounded(folders: dict[str, Path], cache: Path, name: str) -> Path:
    """``weights:BITS:BLOCK``: the constant weights of MatMul / Gemm nodes rounded (:func:`round_to_bits`);
    ``weights:fp16``: every weight matrix (:func:`_each_weight_matrix`) rounded to float16."""
    from onnx import TensorProto, helper, numpy_helper

    if name == "weights:fp16":
        half = lambda w: w.astype(np.float16)  # noqa: E731
        return _rewrite_weights(folders, cache, name, lambda model: _each_weight_matrix(model, half))
    _, bits, block = name.split(":")

    def change(model):
        axes: dict[str, int] = {}  # initializer -> its reduced axis
        for node in model.graph.node:
            if node.op_type == "MatMul" and len(node.input) == 2:
                axes[node.input[1]] = 0
            elif node.op_type == "Gemm":
                attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
                axes[node.input[1]] = 1 if attrs.get("transB", 0) else 0
        for i, t in enumerate(model.graph.initializer):
            if t.name in axes and t.data_type == TensorProto.FLOAT and len(t.dims) == 2:
                w = round_to_bits(numpy_helper.to_array(t), int(bits), int(block), axes[t.name])
                model.graph.initializer[i].CopyFrom(numpy_helper.from_array(w, t.name))

    return _rewrite_weights(folders, cache, name, change)


CONTROLS = {"noise": noisy, "weights": rounded}


def _tally(per_task: dict, sample, tokens: tuple, texts: tuple, results: tuple, max_bins: int, logits=0.0):
    """Add one answer pair (reference, variant) to ``per_task``."""
    t = per_task.setdefault(
        sample.task,
        {
            "n": 0,
            "exact": 0,
            "prefix": 0,
            "longest": 0,
            "task_level": 0,
            "text_equal": 0,
            "scores_a": [],
            "scores_b": [],
            "first_logits_max": 0.0,
        },
    )
    (a, b), (text_a, text_b) = tokens, texts
    prefix = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    t["n"] += 1
    t["exact"] += a == b
    t["prefix"] += prefix
    t["longest"] += max(len(a), len(b))
    t["task_level"] += tiny_eval.answers_agree(text_a, text_b, max_bins)
    t["text_equal"] += tiny_eval.answers_agree(text_a, text_b, tiny_eval.NUM_BINS)
    t["scores_a"].append(tiny_eval.score_answer(sample, results[0][sample.task]))
    t["scores_b"].append(tiny_eval.score_answer(sample, results[1][sample.task]))
    t["first_logits_max"] = max(t["first_logits_max"], logits)


def judge(ref: Florence2, model: Florence2, samples, max_bins: int, max_new_tokens: int) -> dict:
    """Per task: identical answers, token agreement, task-level agreement, and both models' scores."""
    per_task: dict[str, dict] = {}
    for sample in samples:
        inputs = sample.inputs
        options = CompareOptions(
            task=sample.task,
            text=inputs.get("text"),
            region=inputs.get("region"),
            max_new_tokens=max_new_tokens,
        )
        c = compare_image(ref, model, sample.image, options)
        texts = tuple(ref.tokenizer.batch_decode(np.array([t]))[0] for t in (c.tokens_a, c.tokens_b))
        tokens, results = (c.tokens_a, c.tokens_b), (c.result_a, c.result_b)
        _tally(per_task, sample, tokens, texts, results, max_bins, c.tensors["first_logits"].max_abs)
    return per_task


def judge_transformers(
    checkpoint: Path, name: str, samples, max_bins: int, max_new_tokens: int, threads: int
) -> dict:
    """transformers in ``TRANSFORMERS[name]``'s dtype against transformers in float32 (same attention), judged
    as :func:`judge` judges the runtime: same prompts, the checkpoint's generation settings, the processor's
    post-processing."""
    import torch
    from transformers import AutoProcessor, Florence2ForConditionalGeneration

    from florence2_runtime.cli.compare import generated_tokens
    from florence2_runtime.tasks.prompts import build_task_text

    torch.set_num_threads(threads)
    dtype, attn = TRANSFORMERS[name]
    kwargs = {"attn_implementation": attn} if attn else {}
    processor = AutoProcessor.from_pretrained(checkpoint, backend="pil")
    models = [
        Florence2ForConditionalGeneration.from_pretrained(checkpoint, dtype=d, **kwargs).eval()
        for d in (torch.float32, {"bf16": torch.bfloat16}[dtype])
    ]
    eos = models[0].generation_config.eos_token_id
    per_task: dict[str, dict] = {}
    for sample in samples:
        inputs = sample.inputs
        prompt = build_task_text(
            sample.task, text=inputs.get("text"), region=inputs.get("region"), image_size=sample.image.size
        )
        batch = processor(text=[prompt], images=[sample.image], return_tensors="pt")
        tokens, texts, results = [], [], []
        for model in models:
            feed = {**batch, "pixel_values": batch["pixel_values"].to(model.dtype)}
            with torch.inference_mode():
                ids = model.generate(**feed, max_new_tokens=max_new_tokens).numpy()[0]
            text = processor.batch_decode(ids[None], skip_special_tokens=False)[0]
            tokens.append(generated_tokens(ids, eos))
            texts.append(text)
            results.append(
                processor.post_process_generation(text, task=sample.task, image_size=sample.image.size)
            )
        _tally(per_task, sample, tuple(tokens), tuple(texts), tuple(results), max_bins)
    return per_task


def summarise(per_task: dict) -> dict:
    rows = {}
    for task, t in per_task.items():
        rows[task] = {
            "n": t["n"],
            "identical": t["exact"] / t["n"],
            "token_agreement": t["prefix"] / max(t["longest"], 1),
            "task_level": t["task_level"] / t["n"],
            "text_equal": t["text_equal"] / t["n"],
            "first_logits_max_abs_diff": t["first_logits_max"],
            "fp32": tiny_eval.summarise(task, t["scores_a"]),
            "variant": tiny_eval.summarise(task, t["scores_b"]),
        }
    total = lambda k: sum(t[k] for t in per_task.values())  # noqa: E731
    first = lambda row, side: next(iter(row[side].values()))  # noqa: E731  the task's first metric
    overall = {
        "n": total("n"),
        "identical": total("exact") / total("n"),
        "token_agreement": total("prefix") / max(total("longest"), 1),
        "task_level": total("task_level") / total("n"),
        "text_equal": total("text_equal") / total("n"),
        # mean over the tasks of the change of their first metric (variant - its float32 reference)
        "score_change": float(np.mean([first(r, "variant") - first(r, "fp32") for r in rows.values()])),
    }
    return {"overall": overall, "tasks": rows}


def markdown(results: dict, args) -> str:
    lines = [
        f"Precision variants of florence2-tiny-shapes vs its fp32 export: {args.per_task} held-out images per "
        f"task (seed {args.seed}), generation defaults (3 beams), up to {args.tokens} new tokens, "
        f"task-level = same text and every location within {args.max_bins} bins. Runtime variants are "
        "compared with this runtime's fp32 export, transformers rows with transformers in float32; "
        "task-score change = mean over the 15 tasks of the change in the task's first metric (below).",
        "",
    ]
    lines += [
        "| variant | answers | identical | token agreement | task-level agreement | same text, locations anywhere "
        "| task-score change |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        o = r["overall"]
        lines.append(
            f"| {name} | {o['n']} | {o['identical']:.1%} | {o['token_agreement']:.1%} | {o['task_level']:.1%} "
            f"| {o['text_equal']:.1%} | {o['score_change']:+.4f} |"
        )
    lines += [
        "",
        "Per task (identical / task-level; first metric of the task for fp32 -> variant):",
        "",
        "| task | " + " | ".join(results) + " |",
        "|---|" + "---|" * len(results),
    ]
    for task in next(iter(results.values()))["tasks"]:
        cells = []
        for r in results.values():
            t = r["tasks"][task]
            metric = next(iter(t["fp32"]))
            cells.append(
                f"{t['identical']:.0%} / {t['task_level']:.0%}; {metric} {t['fp32'][metric]:.2f} -> "
                f"{t['variant'][metric]:.2f}"
            )
        lines.append(f"| `{task}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", type=Path, default=TINY_SHAPES)
    p.add_argument("--cache", type=Path, default=Path("benchmarks/.cache/precision-tiny"))
    p.add_argument("--refresh", action="store_true", help="re-export even if the cache has the folders")
    p.add_argument("--per-task", type=int, default=20)
    p.add_argument("--seed", type=int, default=20_000)
    p.add_argument("--tokens", type=int, default=80)
    p.add_argument(
        "--max-bins", type=int, default=5, help="task-level agreement: locations within this many bins"
    )
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help="fp16, int8, bf16, bf16-encoders, bf16-all, fp32-openvino, transformers-bf16[-eager], "
        "int8-static-vision, "
        "a recipe of RECIPES, "
        "DTYPE:GRAPH (only that graph converted, e.g. int8:vision_encoder), or a control: noise:EPS, "
        "weights:BITS:BLOCK, weights:fp16",
    )
    p.add_argument("--out", type=Path, help="write OUT.json and OUT.md")
    args = p.parse_args(argv)
    folders = exports(args.checkpoint, args.cache, args.refresh)
    samples = tiny_eval.held_out_set(args.per_task, args.seed)
    ref = Florence2.from_pretrained(folders["fp32"], threads=args.threads)
    results = {}
    for name in args.variants.split(","):
        if name in TRANSFORMERS:
            per_task = judge_transformers(
                args.checkpoint, name, samples, args.max_bins, args.tokens, args.threads
            )
            results[name] = summarise(per_task)
            print(name, json.dumps(results[name]["overall"]), file=sys.stderr)
            continue
        folder = (
            CONTROLS[name.split(":")[0]](folders, args.cache, name)
            if name.split(":")[0] in CONTROLS
            else hybrid(folders, args.cache, name)
            if ":" in name
            else recipe(folders, args.cache, name)
            if name in RECIPES
            else static_vision(folders, args.cache, name)
            if name == "int8-static-vision"
            else folders["fp32"]
            if name in COMPUTE
            else folders[name]
        )
        model = Florence2.from_pretrained(folder, threads=args.threads, **COMPUTE.get(name, {}))
        results[name] = summarise(judge(ref, model, samples, args.max_bins, args.tokens))
        print(name, json.dumps(results[name]["overall"]), file=sys.stderr)
    text = markdown(results, args)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
        args.out.with_suffix(".md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
