"""``florence2_runtime.tasks.postprocess`` on its own: the default banned list and what it refuses.

Every task's answers against transformers' ``post_process_generation``: tests/parity/test_postprocess.py.
"""

from __future__ import annotations

import json

import pytest

from florence2_runtime.tasks.postprocess import (
    DEFAULT_BANNED_GROUNDING_TOKENS,
    parse,
    post_process_generation,
)
from tests.helpers.paths import DATA

CONFIGS = DATA / "florence2_configs.json"  # the published checkpoints' configs


def test_default_banned_list_is_the_published_one():
    assert (
        list(DEFAULT_BANNED_GROUNDING_TOKENS)
        == json.loads(CONFIGS.read_text())["post_processor_config"]["phrase_grounding"][
            "banned_grounding_tokens"
        ]
    )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(text=None, task="<OD>", image_size=(1, 1)), "text must be a str"),
        (dict(text="x", task=None, image_size=(1, 1)), "task must be"),
        (dict(text="x", task="<OD>", image_size=None), "image_size"),
        (dict(text="x", task="<OD>", image_size=(1, 2, 3)), "image_size"),
        (dict(text="x", task="<OD>", image_size=(1, float("nan"))), "image_size"),
        (dict(text="x", task="<OD>", image_size=(640.5, 480)), "positive whole numbers"),
        (dict(text="x", task="<OD>", image_size=(0, 480)), "positive whole numbers"),
        (
            dict(
                text="x",
                task="<CAPTION_TO_PHRASE_GROUNDING>",
                image_size=(1, 1),
                banned_grounding_tokens="it",
            ),
            "banned_grounding_tokens",
        ),
    ],
)
def test_bad_input_raises_value_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        post_process_generation(**kwargs)


def test_parse_rejects_unknown_parse_type():
    with pytest.raises(ValueError, match="unknown parse type"):
        parse("x", "nope", (1, 1))
