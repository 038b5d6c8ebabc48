"""The toy checkpoints of ``florence2_export.toy.tiny``: the embedded base/large configs (used by benchmarks and
tests offline) equal the published ones; the tokenizer has Florence-2's layout; random weights still give
varied answers."""

from __future__ import annotations

import json

import pytest

from florence2_export.toy.tiny import ADDED_TOKENS, BART_BASE_VOCAB, MODEL_CONFIGS, build_tokenizer
from tests.helpers.images import make_test_image
from tests.helpers.paths import DATA

CONFIGS = DATA / "florence2_configs.json"  # the published checkpoints' configs


@pytest.mark.parametrize("size", ["base", "large"])
@pytest.mark.parametrize("part", ["vision_config", "text_config"])
def test_embedded_configs_equal_the_published_ones(size, part):
    published = json.loads(CONFIGS.read_text())[size][part]
    assert MODEL_CONFIGS[size][part] == published


def test_tiny_tokenizer_layout_matches_florence2(tiny_checkpoint, hf_processor):
    tok = hf_processor.tokenizer
    vocab = tok.get_vocab()
    base = vocab["<mask>"] + 1  # <mask> closes the base vocabulary, as in BART
    assert [vocab[t] for t in ("<s>", "<pad>", "</s>", "<unk>")] == [0, 1, 2, 3]
    assert [vocab[t] for t in ADDED_TOKENS] == list(range(base, base + len(ADDED_TOKENS)))
    assert len(tok) == base + 1024 + 1 and tok.convert_ids_to_tokens(len(tok) - 1) == "<image>"
    # every added token is special, as the published checkpoints add them with add_special_tokens
    added = tok.added_tokens_decoder
    assert all(added[vocab[t]].special for t in ADDED_TOKENS)
    assert tok.image_token == "<image>" and tok.image_token_id == vocab["<image>"]
    config = json.loads((tiny_checkpoint / "config.json").read_text())
    assert config["image_token_id"] == vocab["<image>"] and config["text_config"]["vocab_size"] == len(tok)


def test_full_size_tokenizer_has_the_real_ids():
    tok = build_tokenizer(base_vocab_size=BART_BASE_VOCAB)
    assert tok.token_to_id("<mask>") == 50264
    assert tok.token_to_id("<od>") == 50265 and tok.token_to_id("<loc_0>") == 50269
    assert tok.token_to_id("<loc_999>") == 51268 and tok.token_to_id("<and>") == 51288
    assert tok.token_to_id("<image>") == 51289 and tok.get_vocab_size() == 51290


@pytest.mark.slow
def test_tiny_model_output_is_not_degenerate(hf_model, hf_processor):
    """Random weights, but greedy decoding gives varied text and location tokens that depend on the input."""
    import torch

    images = [make_test_image(90, 70, seed=s) for s in range(3)]
    texts = ["<OD>", "<CAPTION>", "<OPEN_VOCABULARY_DETECTION>a cat"]
    batch = hf_processor(text=texts, images=images, return_tensors="pt", padding=True)
    with torch.no_grad():
        out = hf_model.generate(**batch, max_new_tokens=30, num_beams=1).numpy()
    loc0 = hf_processor.tokenizer.convert_tokens_to_ids("<loc_0>")
    loc = (out >= loc0) & (out < loc0 + 1000)
    assert loc.any() and (~loc[:, 2:] & (out[:, 2:] > 3)).any()
    assert len({tuple(row) for row in out}) == len(texts)
    assert all(len(set(row[2:].tolist())) >= 5 for row in out)
