"""The offline demo: a tiny RANDOM-weight Florence-2, exported and run on every task.

Nothing is downloaded. The answers are noise (the weights are random); the demo shows the
whole path (checkpoint -> ONNX folder -> torch-free runtime -> post-processed dicts) works,
and that the runtime's tokens equal transformers' on the same checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path

from .exporter import export
from .tiny import make_test_image, write_tiny_checkpoint

DEMO_INPUTS = {
    "<CAPTION>": {},
    "<DETAILED_CAPTION>": {},
    "<MORE_DETAILED_CAPTION>": {},
    "<OD>": {},
    "<DENSE_REGION_CAPTION>": {},
    "<REGION_PROPOSAL>": {},
    "<CAPTION_TO_PHRASE_GROUNDING>": {"text": "a red ball on a table"},
    "<REFERRING_EXPRESSION_SEGMENTATION>": {"text": "the red ball"},
    "<REGION_TO_SEGMENTATION>": {"region": (10, 12, 90, 70)},
    "<OPEN_VOCABULARY_DETECTION>": {"text": "ball"},
    "<REGION_TO_CATEGORY>": {"region": (10, 12, 90, 70)},
    "<REGION_TO_DESCRIPTION>": {"region": (10, 12, 90, 70)},
    "<REGION_TO_OCR>": {"region": (10, 12, 90, 70)},
    "<OCR>": {},
    "<OCR_WITH_REGION>": {},
}


def run_demo(workdir: Path, max_new_tokens: int = 24) -> dict:
    """Build, export and run; prints one JSON line per task and returns the results."""
    from florence2_runtime import Florence2

    workdir = Path(workdir)
    checkpoint = write_tiny_checkpoint(workdir / "tiny-random-checkpoint", size="tiny")
    export(checkpoint, workdir / "tiny-random-onnx", overwrite=True)
    model = Florence2.from_pretrained(workdir / "tiny-random-onnx")
    image_path = workdir / "demo.png"
    make_test_image(160, 120, seed=0).save(image_path)
    print("# RANDOM WEIGHTS: the answers below are noise; they show the pipeline runs end to end.")
    results = {}
    for task, inputs in DEMO_INPUTS.items():
        results[task] = model.run(image_path, task, max_new_tokens=max_new_tokens, **inputs)
        print(json.dumps(results[task], ensure_ascii=False))
    _compare_with_transformers(checkpoint, model, image_path, max_new_tokens)
    return results


def _compare_with_transformers(checkpoint: Path, model, image_path: Path, max_new_tokens: int) -> None:
    """Print whether the runtime's ids equal transformers' for a batched beam-search request."""
    import numpy as np
    import torch
    from PIL import Image
    from transformers import AutoProcessor, Florence2ForConditionalGeneration

    ref = Florence2ForConditionalGeneration.from_pretrained(checkpoint, attn_implementation="eager").eval()
    processor = AutoProcessor.from_pretrained(checkpoint, backend="pil")  # the runtime reproduces the PIL backend
    images = [Image.open(image_path).convert("RGB"), make_test_image(64, 200, seed=3)]
    texts = ["<OD>", "<CAPTION_TO_PHRASE_GROUNDING>a red ball"]
    batch = processor(text=texts, images=images, return_tensors="pt", padding=True)
    with torch.no_grad():
        expected = ref.generate(**batch, max_new_tokens=max_new_tokens, num_beams=3).numpy()
    got = model.generate(images, texts, max_new_tokens=max_new_tokens, num_beams=3)
    same = expected.shape == got.shape and bool(np.array_equal(expected, got))
    print(f"# token ids equal to transformers' generate (batch 2, 3 beams): {same}")
    if not same:
        raise SystemExit("the runtime disagrees with transformers on the demo checkpoint")
