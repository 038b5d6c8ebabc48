"""``florence2_runtime.inputs.tokenizer`` on the committed tiny model's tokenizer.json: what it refuses, and
how prompts split. Ids and text against the checkpoint's ``Florence2Processor``: tests/parity/test_tokenizer.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from florence2_runtime.errors import ModelFileError
from florence2_runtime.inputs.tokenizer import Florence2Tokenizer


@pytest.fixture(scope="module")
def tiny_tokenizer(tiny_folder) -> Florence2Tokenizer:
    """The tokenizer.json the exporter wrote for the tiny checkpoint."""
    return Florence2Tokenizer.from_file(tiny_folder / "tokenizer.json")


REGION = "<loc_12><loc_345><loc_678><loc_999>"


def test_prompts_use_real_merges_and_single_location_tokens(tiny_tokenizer):
    ids, _ = tiny_tokenizer.encode_prompts(["Locate the objects with category name in the image. " + REGION])
    words = ["Locate", "the", "objects", "with", "category", "name", "in", "the", "image."]
    # <s>, one token per word, ".", the space before the added tokens, 4 locations, </s>
    assert ids.shape[1] == 1 + len(words) + 1 + 1 + 4 + 1


def test_encode_errors(tiny_tokenizer):
    with pytest.raises(ValueError, match="list"):
        tiny_tokenizer.encode_prompts("a single string")
    with pytest.raises(ValueError, match="at least one"):
        tiny_tokenizer.encode_prompts([])
    with pytest.raises(ValueError, match="prompt 1"):
        tiny_tokenizer.encode_prompts(["ok", 5])


def test_decode_errors(tiny_tokenizer):
    with pytest.raises(ValueError, match="2-D"):
        tiny_tokenizer.batch_decode(np.array([2, 0, 2]))
    with pytest.raises(ValueError, match=r"0.."):
        tiny_tokenizer.batch_decode(np.array([[2, -1]]))
    with pytest.raises(ValueError, match="integers"):
        tiny_tokenizer.batch_decode(np.array([[2.0, 0.0]]))
    with pytest.raises(ValueError, match="row 1"):
        tiny_tokenizer.batch_decode([[2, 0], [[1, 2]]])


def test_from_file_errors(tmp_path):
    with pytest.raises(ModelFileError, match="not found"):
        Florence2Tokenizer.from_file(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ModelFileError, match=r"bad.json"):
        Florence2Tokenizer.from_file(bad)
    from tokenizers import Tokenizer, models

    plain = tmp_path / "plain.json"
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    Tokenizer(models.WordLevel(vocab, unk_token="<unk>")).save(str(plain))
    with pytest.raises(ModelFileError, match="<image>"):
        Florence2Tokenizer.from_file(plain)
