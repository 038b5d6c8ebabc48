"""The onnx-community layout as the exporter writes it: its files, a folder like the published ones, the
``--layout`` option. (Loading such folders: tests/runtime/test_onnx_community.py; ids: tests/parity.)"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from florence2_runtime import Florence2
from florence2_runtime.engine.graphs import community_graphs
from florence2_runtime.engine.onnx_community import community_runtime_config
from tests.helpers.images import make_test_image

IMAGES = [(160, 120), (33, 200), (300, 31)]
TEXTS = [
    "<OD>",
    "<CAPTION_TO_PHRASE_GROUNDING>a red car",
    "<REGION_TO_DESCRIPTION><loc_100><loc_200><loc_500><loc_700>",
]


def _images():
    return [make_test_image(w, h, seed=i) for i, (w, h) in enumerate(IMAGES)]


def _copy(folder, tmp_path, drop=(), rename=None):
    """A copy of ``folder`` without the ``onnx/`` files in ``drop``; ``rename(name)`` renames the others."""
    out = tmp_path / "model"
    shutil.copytree(folder, out)
    for name in drop:
        (out / "onnx" / name).unlink()
    if rename:
        for path in list((out / "onnx").iterdir()):
            path.rename(path.with_name(rename(path.name)))
    return out


def test_export_writes_the_layout(community_folder):
    names = {p.name for p in (community_folder / "onnx").iterdir()}
    assert names == {
        spec.filename for spec in community_graphs(community_runtime_config(community_folder).dims).values()
    }
    for name in (
        "config.json",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "preprocessor_config.json",
    ):
        assert (community_folder / name).is_file(), name
    assert not (
        community_folder / "florence2_config.json"
    ).exists()  # the runtime config comes from config.json & co


def test_folder_like_the_published_ones(community_folder, community_model, tmp_path):
    """onnx-community/Florence-2-* ship the original remote-code config.json, a tokenizer without <image>
    and no prompt tables: the runtime builds the same config (default prompts) and gives the same ids."""
    from tests.helpers.original_layout import original_config_dict

    folder = _copy(community_folder, tmp_path)
    native = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(original_config_dict(native)))
    tok = json.loads((folder / "tokenizer.json").read_text())
    tok["added_tokens"] = [a for a in tok["added_tokens"] if a["content"] != "<image>"]
    (folder / "tokenizer.json").write_text(json.dumps(tok))
    pre = json.loads((folder / "preprocessor_config.json").read_text())
    for key in ("task_prompts_without_inputs", "task_prompts_with_input", "image_seq_length"):
        pre.pop(key)
    (folder / "preprocessor_config.json").write_text(json.dumps(pre))
    (folder / "processor_config.json").unlink()

    model = Florence2.from_pretrained(folder)
    assert model.tokenizer.image_token_id == model.config.vocab_size  # added after the original vocabulary
    assert model.config.num_image_tokens == community_model.config.num_image_tokens
    kwargs = dict(max_new_tokens=20, num_beams=3)
    np.testing.assert_array_equal(
        model.generate(_images(), TEXTS, **kwargs), community_model.generate(_images(), TEXTS, **kwargs)
    )


def test_export_rejects_an_unknown_layout(tiny_checkpoint, tmp_path):
    from florence2_export import export

    with pytest.raises(ValueError, match="layout"):
        export(tiny_checkpoint, tmp_path / "out", layout="optimum")


def test_cli_takes_the_layout():
    from florence2_runtime.cli import build_parser

    args = build_parser().parse_args(["export", "src", "out", "--layout", "onnx-community"])
    assert args.layout == "onnx-community"
