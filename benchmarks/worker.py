"""One side of the CPU benchmark, run as a long-lived subprocess by ``benchmarks/cpu.py``.

    python benchmarks/worker.py transformers CHECKPOINT --threads 2 --images a.png b.png [--dtype bf16 --attn eager]
    python benchmarks/worker.py runtime MODEL_FOLDER --threads 2 --images a.png b.png [--kwargs '{"precision": "bf16"}']

Protocol: JSON lines. The worker answers ``{"ready": ...}`` once loaded, then one line per request
``{"tokens": N, "beams": K, "batch": B, "task": "<OD>"}`` with the stage times of one generate call
(exactly N new tokens) plus the process's CPU seconds, the ids and its peak RSS so far; ``{"quit": true}`` ends it. Each side is
its own process so that its peak RSS (``VmHWM``) is its own. The runtime side never imports torch.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path


def peak_rss_bytes() -> int:
    """``VmHWM`` of this process (peak resident set size) in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


class RuntimeSide:
    """The torch-free runtime, timed by ``florence2_runtime.cli.bench.timed_generate``."""

    name = "runtime"

    def __init__(self, model: str, threads: int, kwargs: str | None = None, **_):
        from florence2_runtime import Florence2

        self.model = Florence2.from_pretrained(model, threads=threads, **json.loads(kwargs or "{}"))
        self.info = {"graphs": _graph_engines(self.model)}

    def run(self, images, texts, tokens: int, beams: int) -> tuple[list, dict]:
        from florence2_runtime.cli.bench import timed_generate

        ids, times = timed_generate(
            self.model, images, texts, max_new_tokens=tokens, min_new_tokens=tokens, num_beams=beams
        )
        return ids.tolist(), times.to_dict()


def _graph_engines(model) -> str:
    """Which engine runs each graph: ``"vision OpenVINO bf16, text OpenVINO bf16, decoder CPUExecutionProvider"``."""
    out = []
    for role in ("vision", "text", "decoder"):
        session = getattr(model.engine.sessions, role, None)
        if session is not None:
            precision = getattr(session, "precision", None)
            out.append(f"{role} {session.get_providers()[0]}" + (f" {precision}" if precision else ""))
    return ", ".join(out)


class TransformersSide:
    """``Florence2ForConditionalGeneration.generate`` in ``dtype`` with ``attn`` attention (None: transformers'
    default), stages timed with module hooks.

    Stages: preprocess = the processor call; vision_encoder = vision tower + projector; text_encoder =
    the BART encoder; first_step = from the encoder's end to the second decoder call (transformers also
    computes the cross-attention K/V there); per_token = the later steps; decoder_run = decoder + lm_head.
    """

    name = "transformers"

    def __init__(self, checkpoint: str, threads: int, dtype: str = "fp32", attn: str | None = None, **_):
        import torch
        from transformers import AutoProcessor, Florence2ForConditionalGeneration

        torch.set_num_threads(threads)
        self.torch = torch
        self.dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]
        kwargs = {"attn_implementation": attn} if attn else {}
        self.model = Florence2ForConditionalGeneration.from_pretrained(
            checkpoint, dtype=self.dtype, **kwargs
        ).eval()
        self.processor = AutoProcessor.from_pretrained(checkpoint, backend="pil")
        self.info = {
            "dtype": str(self.model.dtype),
            "attention": self.model.config._attn_implementation,
            "torch_threads": torch.get_num_threads(),
        }
        self.marks: dict[str, list[float]] = {}
        inner = self.model.model
        hooks = [
            (inner.vision_tower, "vision_start", "pre"),
            (inner.multi_modal_projector, "vision_end", "post"),
            (inner.language_model.encoder, "encoder_start", "pre"),
            (inner.language_model.encoder, "encoder_end", "post"),
            (inner.language_model.decoder, "decoder_start", "pre"),
            (self.model.lm_head, "decoder_end", "post"),
        ]
        for module, key, kind in hooks:
            mark = self._marker(key)
            if kind == "pre":
                module.register_forward_pre_hook(lambda m, a, mark=mark: mark())
            else:
                module.register_forward_hook(lambda m, a, o, mark=mark: mark())

    def _marker(self, key: str):
        def mark() -> None:
            self.marks.setdefault(key, []).append(time.perf_counter())

        return mark

    def run(self, images, texts, tokens: int, beams: int) -> tuple[list, dict]:
        self.marks = {}
        with self.torch.inference_mode():
            t0 = time.perf_counter()
            inputs = self.processor(text=texts, images=images, return_tensors="pt", padding=True)
            inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)  # the model's dtype
            t1 = time.perf_counter()
            ids = self.model.generate(**inputs, max_new_tokens=tokens, min_new_tokens=tokens, num_beams=beams)
            t4 = time.perf_counter()
        m = self.marks
        starts, ends = m["decoder_start"], m["decoder_end"]
        later = max(len(starts) - 1, 1)
        second = starts[1] if len(starts) > 1 else t4
        per_token = (t4 - second) / later
        decoder_run = sum(e - s for s, e in zip(starts[1:], ends[1:])) / later
        batch, n = ids.shape[0], ids.shape[1] - 1
        end_to_end = t4 - t0
        times = {
            "preprocess": t1 - t0,
            "vision_encoder": m["vision_end"][0] - m["vision_start"][0],
            "text_encoder": m["encoder_end"][0] - m["encoder_start"][0],
            "first_step": second - m["encoder_end"][0],
            "per_token": per_token,
            "end_to_end": end_to_end,
            "decoder_run": decoder_run,
            "kv_reorder": 0.0,  # inside transformers' generate loop: counted in bookkeeping
            "bookkeeping": per_token - decoder_run,
            "tokens": n,
            "batch": batch,
            "tokens_per_second": batch * n / end_to_end,
        }
        return ids.tolist(), times


SIDES = {"runtime": RuntimeSide, "transformers": TransformersSide}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("side", choices=sorted(SIDES))
    parser.add_argument("model", help="exported folder (runtime) or checkpoint folder (transformers)")
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--images", nargs="+", required=True)
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"], help="transformers: weights")
    parser.add_argument("--attn", help="transformers: attn_implementation (default: transformers' choice)")
    parser.add_argument(
        "--kwargs", help='runtime: from_pretrained keywords as JSON (e.g. {"precision": "bf16"})'
    )
    args = parser.parse_args()

    out = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    sys.stdout = sys.stderr  # library chatter must not corrupt the protocol
    from PIL import Image

    t = time.perf_counter()
    side = SIDES[args.side](args.model, args.threads, dtype=args.dtype, attn=args.attn, kwargs=args.kwargs)
    images = [Image.open(p).convert("RGB") for p in args.images]
    ready = {"ready": True, "load_seconds": time.perf_counter() - t, "peak_rss": peak_rss_bytes()}
    out.write(json.dumps({**ready, "info": side.info}) + "\n")
    for line in sys.stdin:
        request = json.loads(line)
        if request.get("quit"):
            break
        batch = [images[i % len(images)] for i in range(request["batch"])]
        cpu = time.process_time()
        ids, times = side.run(
            batch, [request["task"]] * request["batch"], request["tokens"], request["beams"]
        )
        times["cpu_seconds"] = time.process_time() - cpu  # every thread's, spin-waiting included
        out.write(json.dumps({"times": times, "ids": ids, "peak_rss": peak_rss_bytes()}) + "\n")
    out.write(json.dumps({"peak_rss": peak_rss_bytes()}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
