"""Fixtures of the parity tests alone (the shared ones, ``hf_model``, ``hf_processor``, ..., are in
``tests/conftest.py``)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def word_level_processor():
    """``make(post_processor_config)``: a real ``Florence2Processor`` with a word-level tokenizer and no
    weights, for tests of the processor's text side (prompts, post-processing)."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast
    from transformers.models.florence2 import processing_florence2 as processing

    try:
        from transformers import CLIPImageProcessorPil as CLIPImageProcessor  # no torchvision warning
    except ImportError:
        from transformers import CLIPImageProcessor

    def make(post_processor_config: dict):
        vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "<image>": 4}
        tokenizer = PreTrainedTokenizerFast(
            tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="<unk>")),
            bos_token="<s>",
            eos_token="</s>",
            pad_token="<pad>",
            unk_token="<unk>",
            extra_special_tokens={"image_token": "<image>"},
        )
        image_processor = CLIPImageProcessor(size={"height": 768, "width": 768}, do_center_crop=False)
        image_processor.image_seq_length = 577
        return processing.Florence2Processor(
            image_processor=image_processor, tokenizer=tokenizer, post_processor_config=post_processor_config
        )

    return make
