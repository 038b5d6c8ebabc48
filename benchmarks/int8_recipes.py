"""The int8 recipes (florence2_runtime.engine.int8cpu.RECIPES) side by side on this CPU: accuracy and speed.

    python benchmarks/int8_recipes.py                  # base size, 30 alternating runs
    qemu-x86_64 -cpu Haswell .venv/bin/python benchmarks/int8_recipes.py --no-vision --runs 1   # AVX2, no VNNI

Per recipe, on the cached random-weight export of ``benchmarks/precision_variants.py`` (written on first use):
max |int8 - fp32| of the vision features, the cross K/V and the first-step logits for one generated image
(``--no-vision``: the text encoder is fed fp32 features saved by an earlier run with the vision encoder,
for emulators, where it takes minutes), and the min over ``--runs`` alternating runs of the text encoder
and of one 3-beam decoder step (1 thread). It prints whether onnxruntime saturates uint8 x int8 here.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from precision_variants import variant_folder

from florence2_runtime import Florence2
from florence2_runtime.cli.bench import generated_image
from florence2_runtime.cli.compare import TensorDiff
from florence2_runtime.engine.int8cpu import cpu_description, u8s8_saturates
from florence2_runtime.model import processor_inputs
from florence2_runtime.tasks.prompts import build_task_text

VARIANTS = ("fp32", "int8", "int8-full-range", "int8-u8u8")  # int8: the default recipe (7bit)
TASK = "<MORE_DETAILED_CAPTION>"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cache", type=Path, default=Path(__file__).parent / ".cache" / "precision")
    p.add_argument("--size", default="base", choices=["tiny", "base", "large"])
    p.add_argument("--runs", type=int, default=30)
    p.add_argument("--no-vision", action="store_true")
    args = p.parse_args(argv)
    print(f"onnxruntime saturates uint8 x int8 here: {u8s8_saturates()} ({cpu_description()})", flush=True)
    warnings.simplefilter("ignore")  # the full-range folder's warning where it saturates: the point here
    models = {
        n: Florence2.from_pretrained(variant_folder(args.cache, args.size, n), threads=1) for n in VARIANTS
    }
    ref = models["fp32"]
    pil = generated_image(seed=100)
    pixels, ids, mask = processor_inputs(ref, [pil], [build_task_text(TASK, image_size=pil.size)])
    saved = args.cache / f"{args.size}-fp32-features.npy"
    feats = np.load(saved) if args.no_vision else ref.engine.encode_images(pixels)
    np.save(saved, feats)
    cross, cross_mask = ref.engine.encode_text(ids, mask, feats)
    start = np.full((1, 1), ref.config.decoder_start_token_id, np.int64)
    logits = ref.engine.decoder(cross, cross_mask).logits(start)
    for name, m in models.items():
        if name == "fp32":
            continue
        diffs = {
            "cross_kv": TensorDiff.of(cross, m.engine.encode_text(ids, mask, feats)[0]),
            "first_logits": TensorDiff.of([logits], [m.engine.decoder(cross, cross_mask).logits(start)]),
        }
        if not args.no_vision:
            diffs["vision_features"] = TensorDiff.of([feats], [m.engine.encode_images(pixels)])
        print(
            f"{name:16} ({m.config.int8_recipe}) max |int8 - fp32| (max |fp32|): "
            + ", ".join(f"{k} {d.max_abs:.3g} ({d.ref_max_abs:.3g})" for k, d in diffs.items()),
            flush=True,
        )

    best = {n: [float("inf"), float("inf")] for n in models}
    for _ in range(args.runs):
        for name, m in models.items():
            t0 = time.perf_counter()
            kv, kv_mask = m.engine.encode_text(ids, mask, feats)
            t1 = time.perf_counter()
            step = m.engine.decoder(kv, kv_mask, 3)
            tokens = np.full((3, 1), m.config.decoder_start_token_id, np.int64)
            step.logits(tokens)
            tokens = np.concatenate([tokens, np.zeros((3, 1), np.int64)], axis=1)
            t2 = time.perf_counter()
            step.logits(tokens)
            t3 = time.perf_counter()
            best[name] = [min(best[name][0], t1 - t0), min(best[name][1], t3 - t2)]
    for name, (text, step_s) in best.items():
        print(
            f"{name:16} text encoder {1e3 * text:8.1f} ms   decoder step (3 beams) {1e3 * step_s:7.1f} ms"
            f"   (min of {args.runs}, 1 thread)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
