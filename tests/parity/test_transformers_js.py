"""An onnx-community export loaded by transformers.js (npm ``@huggingface/transformers``) under Node.

The script ``tests/node/florence2_generate.mjs`` runs greedy generation with transformers.js on the
exported folder. It is fed the runtime's pixel values and prompt ids (transformers.js resizes images with
sharp, not PIL, so its own preprocessing would differ slightly): the comparison is about the model graphs.
Its tokeniser's ids for each prompt are compared with the runtime's as well.

Skipped only where Node.js is absent; ``scripts/setup.sh`` installs the npm package (``npm ci`` in
``tests/node``).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from florence2_runtime import Florence2
from florence2_runtime.model import processor_inputs
from florence2_runtime.tasks.prompts import construct_prompt
from tests.helpers.images import make_test_image
from tests.helpers.paths import TESTS

NODE_DIR = TESTS / "node"
SCRIPT = NODE_DIR / "florence2_generate.mjs"
CASES = [
    ("<OD>", (160, 120)),
    ("<CAPTION>", (33, 200)),
    ("<CAPTION_TO_PHRASE_GROUNDING>a red car", (90, 90)),
    ("<MORE_DETAILED_CAPTION>", (300, 31)),
]
MAX_NEW_TOKENS = 24

pytestmark = [
    pytest.mark.parity,
    pytest.mark.skipif(
        shutil.which("node") is None, reason="Node.js is not installed: the transformers.js test needs `node`"
    ),
]


def _node_ids(folder: Path, cases: list[dict]) -> dict:
    if not (NODE_DIR / "node_modules" / "@huggingface" / "transformers").is_dir():
        pytest.fail(
            "the npm package @huggingface/transformers is not installed: run scripts/setup.sh "
            "(or `npm ci` in tests/node)"
        )
    spec = folder.parent / "transformers_js_spec.json"
    spec.write_text(json.dumps({"model_dir": str(folder), "cases": cases}))
    done = subprocess.run(["node", str(SCRIPT), str(spec)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_transformers_js_greedy_ids_equal_runtime_and_transformers(community_folder, hf_model, hf_processor):
    runtime = Florence2.from_pretrained(community_folder)
    cfg = runtime.config
    cases, expected_hf, expected_rt, prompt_ids = [], [], [], []
    for i, (text, (w, h)) in enumerate(CASES):
        image = make_test_image(w, h, seed=i)
        pixel_values, text_ids, _ = processor_inputs(runtime, [image], [text])
        pv_file = community_folder.parent / f"pixel_values_{i}.f32"
        pixel_values.astype("<f4").tofile(pv_file)
        cases.append(
            {
                "pixel_values": str(pv_file),
                "pixel_shape": list(pixel_values.shape),
                "input_ids": text_ids.tolist(),
                "max_new_tokens": MAX_NEW_TOKENS,
                "prompt": construct_prompt(
                    text, cfg.task_prompts_without_inputs, cfg.task_prompts_with_input
                ),
            }
        )
        prompt_ids.append(text_ids[0].tolist())
        batch = hf_processor(text=[text], images=[image], return_tensors="pt")
        np.testing.assert_array_equal(batch["pixel_values"].numpy(), pixel_values)  # same model inputs
        with torch.no_grad():
            expected_hf.append(
                hf_model.generate(**batch, max_new_tokens=MAX_NEW_TOKENS, num_beams=1)[0].tolist()
            )
        expected_rt.append(
            runtime.generate([image], [text], max_new_tokens=MAX_NEW_TOKENS, num_beams=1)[0].tolist()
        )

    got = _node_ids(community_folder, cases)
    assert got["prompt_ids"] == prompt_ids
    assert got["ids"] == expected_rt
    assert got["ids"] == expected_hf
