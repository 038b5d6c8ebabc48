"""The embedded base/large configs (used by benchmarks and tests offline) equal the published ones."""

from __future__ import annotations

import json

import pytest

from florence2_export.toy.tiny import MODEL_CONFIGS
from tests.helpers.paths import ROOT

SHARED = ROOT.parent / "shared" / "florence2" / "configs.json"


@pytest.mark.parametrize("size", ["base", "large"])
@pytest.mark.parametrize("part", ["vision_config", "text_config"])
def test_embedded_configs_equal_the_published_ones(size, part):
    if not SHARED.is_file():
        pytest.skip(f"{SHARED} (the project's copy of the published configs) is not on this machine")
    published = json.loads(SHARED.read_text())[size][part]
    assert MODEL_CONFIGS[size][part] == published
