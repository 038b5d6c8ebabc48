"""The embedded base/large configs (used by benchmarks and tests offline) equal the published ones."""

from __future__ import annotations

import json

import pytest

from florence2_export.toy.tiny import MODEL_CONFIGS
from tests.helpers.paths import DATA

CONFIGS = DATA / "florence2_configs.json"  # the published checkpoints' configs


@pytest.mark.parametrize("size", ["base", "large"])
@pytest.mark.parametrize("part", ["vision_config", "text_config"])
def test_embedded_configs_equal_the_published_ones(size, part):
    published = json.loads(CONFIGS.read_text())[size][part]
    assert MODEL_CONFIGS[size][part] == published
