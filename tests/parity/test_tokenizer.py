"""``florence2_runtime.inputs.tokenizer`` against the checkpoint's ``Florence2Processor``: same ids, same text.

The errors it raises: tests/runtime/test_tokenizer.py; the tiny checkpoint's tokenizer layout:
tests/export/test_tiny.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from florence2_export.toy.tiny import TASK_TOKENS
from florence2_runtime.inputs.tokenizer import Florence2Tokenizer
from tests.helpers.images import make_test_image

pytestmark = pytest.mark.parity

REGION = "<loc_12><loc_345><loc_678><loc_999>"
TASK_INPUTS = {  # task -> input text ("" for tasks that take none)
    "<OCR>": "", "<OCR_WITH_REGION>": "", "<CAPTION>": "", "<DETAILED_CAPTION>": "",
    "<MORE_DETAILED_CAPTION>": "", "<OD>": "", "<DENSE_REGION_CAPTION>": "", "<REGION_PROPOSAL>": "",
    "<CAPTION_TO_PHRASE_GROUNDING>": "A green car parked in front of a yellow building.",
    "<REFERRING_EXPRESSION_SEGMENTATION>": "  the dog on the left ",
    "<REGION_TO_SEGMENTATION>": REGION,
    "<OPEN_VOCABULARY_DETECTION>": "a red ball",
    "<REGION_TO_CATEGORY>": REGION,
    "<REGION_TO_DESCRIPTION>": " " + REGION + " ",
    "<REGION_TO_OCR>": "<loc_0><loc_0><loc_999><loc_999>",
}  # fmt: skip

PLAIN_PROMPTS = [  # text without a task token passes through the processor unchanged
    "",
    " ",
    "  leading and trailing spaces  ",
    "Locate the objects with category name in the image.",
    "What is the region <loc_1><loc_2><loc_3><loc_4>?",
    "<loc_5> spaced <loc_6> and glued<loc_7>word",
    "<loc_1000> <LOC_5> <loc_ <loc_-1> loc_5>",
    "<s>nested</s> <pad> <unk> <mask> <od>x</od> <ocr></ocr>",
    "<poly><sep><and></poly> <region_to_desciption> <cap></cap>",
    "ünïcödé, 日本語, emoji 😀👍🏽, Ελληνικά, العربية",
    "tabs\tand\nnewlines\r\n  and   multiple   spaces",
    "punctuation!?.,;:'\"()[]{}<>/\\|@#$%^&*-_=+~`",
    "a" * 200,
    "The image shows a kitchen with white cabinets and a stove.",
]


@pytest.fixture(scope="module", params=["checkpoint", "processor-backend"])
def rt_tokenizer(request, tiny_checkpoint, hf_processor, tmp_path_factory) -> Florence2Tokenizer:
    """The runtime tokenizer from the checkpoint's tokenizer.json and from what the exporter saves."""
    if request.param == "checkpoint":
        return Florence2Tokenizer.from_file(tiny_checkpoint / "tokenizer.json")
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    hf_processor.tokenizer.backend_tokenizer.save(str(path))  # what florence2_export writes
    return Florence2Tokenizer.from_file(path)


def build_prompt(hf_processor, task: str, text: str) -> str:
    """Task token + input -> the sentence the model sees (the processor's tables)."""
    if task in hf_processor.task_prompts_without_inputs:
        return hf_processor.task_prompts_without_inputs[task]
    return hf_processor.task_prompts_with_input[task].format(input=text.strip())


def assert_matches_processor(hf_processor, tok: Florence2Tokenizer, texts: list[str], prompts: list[str]):
    """Image tokens + ``tok.encode_prompts(prompts)`` == ``hf_processor(text=texts, ...)``."""
    images = [make_test_image(8, 8, seed=0)] * len(texts)
    ref = hf_processor(text=texts, images=images, return_tensors="np", padding=True)
    ids, mask = tok.encode_prompts(prompts)
    assert ids.dtype == np.int64 and mask.dtype == np.int64
    n, b = hf_processor.num_image_tokens, len(prompts)
    full_ids = np.concatenate([np.full((b, n), tok.image_token_id, dtype=np.int64), ids], axis=1)
    full_mask = np.concatenate([np.ones((b, n), dtype=np.int64), mask], axis=1)
    np.testing.assert_array_equal(full_ids, ref["input_ids"])
    np.testing.assert_array_equal(full_mask, ref["attention_mask"])


def test_special_ids(rt_tokenizer, hf_processor, hf_model):
    hf_tok = hf_processor.tokenizer
    assert (
        rt_tokenizer.bos_token_id,
        rt_tokenizer.pad_token_id,
        rt_tokenizer.eos_token_id,
        rt_tokenizer.unk_token_id,
    ) == (0, 1, 2, 3)
    assert (hf_tok.bos_token_id, hf_tok.pad_token_id, hf_tok.eos_token_id, hf_tok.unk_token_id) == (
        0,
        1,
        2,
        3,
    )
    assert rt_tokenizer.image_token_id == hf_processor.image_token_id == hf_model.config.image_token_id
    assert rt_tokenizer.vocab_size == len(hf_tok)
    assert rt_tokenizer.token_to_id("<loc_0>") == hf_tok.convert_tokens_to_ids("<loc_0>")
    assert rt_tokenizer.id_to_token(rt_tokenizer.image_token_id) == "<image>"


@pytest.mark.parametrize("task", list(TASK_INPUTS))
def test_every_task_prompt(rt_tokenizer, hf_processor, task):
    text = task + TASK_INPUTS[task]
    prompt = build_prompt(hf_processor, task, TASK_INPUTS[task])
    assert_matches_processor(hf_processor, rt_tokenizer, [text], [prompt])


def test_all_tasks_in_one_padded_batch(rt_tokenizer, hf_processor):
    texts = [task + inp for task, inp in TASK_INPUTS.items()]
    prompts = [build_prompt(hf_processor, task, inp) for task, inp in TASK_INPUTS.items()]
    assert_matches_processor(hf_processor, rt_tokenizer, texts, prompts)
    ids, mask = rt_tokenizer.encode_prompts(prompts)
    lengths = mask.sum(axis=1)
    assert len(set(lengths.tolist())) > 1  # really padded
    assert (ids[mask == 0] == rt_tokenizer.pad_token_id).all()
    assert (ids[np.arange(len(ids)), lengths - 1] == rt_tokenizer.eos_token_id).all()


@pytest.mark.parametrize("prompt", PLAIN_PROMPTS, ids=range(len(PLAIN_PROMPTS)))
def test_plain_prompts(rt_tokenizer, hf_processor, prompt):
    assert_matches_processor(hf_processor, rt_tokenizer, [prompt], [prompt])


def test_plain_prompts_batched(rt_tokenizer, hf_processor):
    assert_matches_processor(hf_processor, rt_tokenizer, PLAIN_PROMPTS, PLAIN_PROMPTS)


def _decode_cases(tok: Florence2Tokenizer) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    v = tok.vocab_size
    loc0, img = tok.token_to_id("<loc_0>"), tok.image_token_id
    special = np.array([0, 1, 2, 3, tok.token_to_id("<mask>"), img, *map(tok.token_to_id, TASK_TOKENS)])
    return [
        rng.integers(0, v, size=(5, 40)),  # anything, byte fragments included
        rng.integers(0, v + 64, size=(3, 25)),  # ids past the tokenizer (padded embedding rows)
        rng.choice(special, size=(4, 30)),
        loc0 + rng.integers(0, 1000, size=(2, 50)),
        np.array([[2, 0, 57, 58, loc0, loc0 + 999, 2, 1, 1], [2, 0, img, special[8], 300, 2, 1, 1, 1]]),
        np.zeros((2, 0), dtype=np.int64),
    ]


def test_batch_decode_matches(rt_tokenizer, hf_processor):
    for ids in _decode_cases(rt_tokenizer):
        expected = hf_processor.batch_decode(ids, skip_special_tokens=False)
        assert rt_tokenizer.batch_decode(ids) == expected
        assert rt_tokenizer.batch_decode(ids.tolist()) == expected
        assert rt_tokenizer.batch_decode(ids.astype(np.int32)) == expected
        if len(ids[0]):
            assert rt_tokenizer.decode(ids[0]) == hf_processor.decode(ids[0], skip_special_tokens=False)


def test_batch_decode_ragged_rows(rt_tokenizer, hf_processor):
    rows = [[2, 0, 300, 301, 2], [2, 0, 2], [], [rt_tokenizer.image_token_id]]
    assert rt_tokenizer.batch_decode(rows) == hf_processor.batch_decode(rows, skip_special_tokens=False)


def test_decode_round_trip_of_prompts(rt_tokenizer, hf_processor):
    ids, _ = rt_tokenizer.encode_prompts(PLAIN_PROMPTS)
    decoded = rt_tokenizer.batch_decode(ids)
    assert decoded == hf_processor.batch_decode(ids, skip_special_tokens=False)
    assert decoded[0] == "<s></s>" + "<pad>" * (ids.shape[1] - 2)
    assert decoded[3].startswith("<s>Locate the objects with category name in the image.</s><pad>")


def test_decode_ignores_cleanup_flag_in_transformers(hf_processor):
    """transformers 5 never applies clean_up_tokenization_spaces to a BPE tokenizer: plain backend decode."""
    tok = hf_processor.tokenizer
    assert tok.clean_up_tokenization_spaces is False
    ids = tok("Hello , world . It 's a test !", add_special_tokens=False)["input_ids"]
    plain = tok.backend_tokenizer.decode(ids, skip_special_tokens=False)
    assert tok.decode(ids, clean_up_tokenization_spaces=True) == plain == "Hello , world . It 's a test !"
