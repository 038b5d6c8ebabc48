"""Speed and divergence of the precision variants (fp32, int8, fp16) of one full-size export, on the CPU.

    python benchmarks/precision_variants.py                    # base size, 128 tokens x 3 beams, 2 threads
    python benchmarks/precision_variants.py --variants fp32,int8 --runs 5 --json

Writes (once) a random-weight full-size checkpoint and its fp32 export under ``--cache``
(default ``benchmarks/.cache/precision/``), converts it to each variant with
``florence2_export.precision.convert_folder``, then per variant:

- times ``--runs`` generate calls (after a warm-up) with exactly ``--tokens`` new tokens and
  ``--beams`` beams, variants interleaved run by run so that a busy machine slows all alike; the
  speed-up compares best runs (the least disturbed by other load);
- compares it with fp32 on ``--images`` generated images (``florence2_runtime.cli.compare``): token
  agreement, equal results, and max |diff| of each graph's output.

Random weights make the divergence figures pessimistic (flat logits flip on small errors; the
random DaViT's activations reach 1e5); the speed figures do not depend on the weights.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from florence2_export.precision import Fp16Options, Int8Options, convert_folder
from florence2_runtime import Florence2
from florence2_runtime.cli.bench import generated_image, timed_generate
from florence2_runtime.cli.compare import CompareOptions, compare_image

# name -> (dtype, options); the named extras are the int8 choices the README's table compares
VARIANTS = {
    "fp32": ("fp32", None),
    "int8": ("int8", None),  # the default recipe: 7-bit int8 weights, right on every CPU
    "int8-full-range": ("int8", Int8Options(recipe="full-range")),  # wrong on x86 CPUs without VNNI
    "int8-u8u8": ("int8", Int8Options(recipe="u8u8")),
    "int8-per-tensor": ("int8", Int8Options(per_channel=False)),
    "int8-all-matmuls": ("int8", Int8Options(exclude=())),
    "fp16": ("fp16", Fp16Options()),
    # random-weight DaViT activations reach 1e5 and overflow float16 (real checkpoints run in float16 in
    # PyTorch); this keeps the vision encoder fp32 to measure the text encoder and decoder in fp16
    "fp16-fp32-vision": ("fp16", Fp16Options(graphs=("text_encoder", "decoder"))),
}
TASK = "<MORE_DETAILED_CAPTION>"


def fp32_folder(cache: Path, size: str) -> Path:
    """The cached fp32 export of a random-weight ``size`` checkpoint (written on first use)."""
    out = cache / f"{size}-fp32"
    if not (out / "florence2_config.json").is_file():
        from florence2_export import export
        from florence2_export.toy.tiny import write_tiny_checkpoint

        checkpoint = write_tiny_checkpoint(cache / f"{size}-checkpoint", size=size)
        export(checkpoint, out, overwrite=True)
    return out


def variant_folder(cache: Path, size: str, name: str) -> Path:
    dtype, options = VARIANTS[name]
    src = fp32_folder(cache, size)
    if name == "fp32":
        return src
    out = cache / f"{size}-{name}"
    if not (out / "florence2_config.json").is_file():
        convert_folder(src, out, dtype, options, overwrite=True)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cache", type=Path, default=Path(__file__).parent / ".cache" / "precision")
    p.add_argument("--size", default="base", choices=["tiny", "base", "large"])
    p.add_argument(
        "--variants", default="fp32,int8,fp16", help=f"comma-separated, from {', '.join(VARIANTS)}"
    )
    p.add_argument("--tokens", type=int, default=128)
    p.add_argument("--beams", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument(
        "--slow-runs", type=int, default=1, help="runs of fp16 (slow on CPUs: casts around most ops)"
    )
    p.add_argument("--images", type=int, default=4, help="generated images for the comparison with fp32")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    names = args.variants.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        p.error(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")

    models = {
        n: Florence2.from_pretrained(variant_folder(args.cache, args.size, n), threads=args.threads)
        for n in names
    }
    image = generated_image(seed=0)
    kwargs = {"max_new_tokens": args.tokens, "min_new_tokens": args.tokens, "num_beams": args.beams}
    times: dict[str, list] = {n: [] for n in names}
    for m in models.values():  # warm-up
        m.generate([image], [TASK], max_new_tokens=2, num_beams=args.beams)
    for r in range(args.runs):
        for n, m in models.items():
            if r < (args.slow_runs if VARIANTS[n][0] == "fp16" else args.runs):
                times[n].append(timed_generate(m, [image], [TASK], **kwargs)[1])
                print(f"run {r + 1} {n}: {times[n][-1].end_to_end:.2f} s", file=sys.stderr, flush=True)

    reference = models.get("fp32") or Florence2.from_pretrained(
        fp32_folder(args.cache, args.size), threads=args.threads
    )
    options = CompareOptions(task=TASK, max_new_tokens=args.tokens, num_beams=args.beams)
    images = [generated_image(640 + 64 * i, 480, seed=100 + i) for i in range(args.images)]
    rows = {}
    for n, m in models.items():

        def med(key: str, runs=times[n]) -> float:
            return statistics.median(getattr(t, key) for t in runs)

        row = {
            "precision": m.config.precision,
            "runs": len(times[n]),
            "end_to_end_s": med("end_to_end"),
            "end_to_end_min_s": min(t.end_to_end for t in times[n]),
            "vision_encoder_s": med("vision_encoder"),
            "text_encoder_s": med("text_encoder"),
            "per_token_ms": 1e3 * med("per_token"),
        }
        if n != "fp32" and args.images:
            comps = [
                compare_image(reference, m, im, options, name=f"image{i}") for i, im in enumerate(images)
            ]
            longest = sum(max(len(c.tokens_a), len(c.tokens_b)) for c in comps)
            row.update(
                {
                    "exact_match_rate": sum(c.exact for c in comps) / len(comps),
                    "token_agreement": sum(c.common_prefix for c in comps) / max(longest, 1),
                    "result_equal_rate": sum(c.result_equal for c in comps) / len(comps),
                    **{f"{k}_max_abs": max(c.tensors[k].max_abs for c in comps) for k in comps[0].tensors},
                    **{
                        f"{k}_ref_max_abs": max(c.tensors[k].ref_max_abs for c in comps)
                        for k in comps[0].tensors
                    },
                }
            )
        rows[n] = row
    base = rows.get("fp32", {}).get("end_to_end_min_s")
    for row in rows.values():  # best run against best run: the least disturbed by other load on the machine
        row["speedup_vs_fp32"] = base / row["end_to_end_min_s"] if base else None

    if args.json:
        print(
            json.dumps(
                {
                    "size": args.size,
                    "tokens": args.tokens,
                    "beams": args.beams,
                    "threads": args.threads,
                    "variants": rows,
                },
                indent=1,
            )
        )
        return 0
    print(f"{args.size}, {args.tokens} tokens x {args.beams} beams, {args.threads} threads (stages: medians)")
    print(
        f"{'variant':<18}{'best s':>8}{'median s':>9}{'speedup':>8}{'vision s':>9}{'text s':>8}{'ms/token':>9}"
        f"{'tokens=':>8}{'agree':>7}{'results=':>9}{'vis max|d|':>11}{'kv max|d|':>10}{'logit max|d|':>13}"
    )
    for n, r in rows.items():
        cmp = (
            f"{r['exact_match_rate']:8.0%}{r['token_agreement']:7.0%}{r['result_equal_rate']:9.0%}"
            f"{r['vision_features_max_abs']:11.3g}{r['cross_kv_max_abs']:10.3g}{r['first_logits_max_abs']:13.3g}"
            if "token_agreement" in r
            else ""
        )
        print(
            f"{n:<18}{r['end_to_end_min_s']:8.2f}{r['end_to_end_s']:9.2f}{r['speedup_vs_fp32'] or 0:8.2f}{r['vision_encoder_s']:9.2f}"
            f"{r['text_encoder_s']:8.2f}{r['per_token_ms']:9.1f}{cmp}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
