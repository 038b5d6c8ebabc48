"""What ``tests/runtime`` uses in place of the exporter equals what the exporter makes.

The runtime tests load model folders committed under ``tests/data/models`` (written by
``scripts/make_test_models.py``) so that they run without torch. Here a fresh export of the same checkpoint
(``onnx_folder``, ``community_folder``) must compute what the committed one computes: the same files and
settings, the same vision features, the same generated ids and scores. Bytes are not compared (ONNX
serialisation may differ between versions); behaviour is. When this fails, run
``python scripts/make_test_models.py`` and commit the result.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from florence2_export.verify import make_test_image as export_test_image
from florence2_runtime import Florence2
from tests.helpers.images import make_test_image
from tests.helpers.paths import DATA, ROOT

REMAKE = "run `python scripts/make_test_models.py` and commit tests/data/models"
IGNORED_SETTINGS = {"source", "transformers_version"}  # the checkpoint's path; the version that wrote it
TASKS = ["<OD>", "<CAPTION>", "<OCR_WITH_REGION>", "<CAPTION_TO_PHRASE_GROUNDING>a ball"]


def _files(folder: Path) -> dict[str, Path]:
    return {p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*")) if p.is_file()}


def _stale(folder: Path, what: str) -> str:
    return f"{folder.relative_to(ROOT)} no longer matches a fresh export ({what}): {REMAKE}"


@pytest.fixture(scope="module", params=["tiny", "tiny-community"])
def pair(request) -> tuple[Path, Path]:
    """(committed folder, fresh export of the same checkpoint in the same layout)."""
    fresh = request.getfixturevalue("onnx_folder" if request.param == "tiny" else "community_folder")
    return DATA / "models" / request.param, fresh


def test_same_files_and_settings(pair):
    committed, fresh = pair
    files = _files(committed)
    assert sorted(files) == sorted(_files(fresh)), _stale(committed, "the files differ")
    for name, path in files.items():
        if name.endswith(".json"):
            ours, theirs = json.loads(path.read_text("utf-8")), json.loads((fresh / name).read_text("utf-8"))
            for key in IGNORED_SETTINGS:
                ours.pop(key, None), theirs.pop(key, None)
            assert ours == theirs, _stale(committed, f"{name} differs")
        elif name.endswith(".npy"):
            np.testing.assert_array_equal(
                np.load(path), np.load(fresh / name), err_msg=_stale(committed, name)
            )


@pytest.mark.slow
def test_same_features_ids_and_scores(pair):
    committed, fresh = pair
    ours, theirs = Florence2.from_pretrained(committed), Florence2.from_pretrained(fresh)
    images = [make_test_image(96, 80, seed=1), make_test_image(40, 130, seed=2)]
    for a, b in zip(ours.encode_images(images), theirs.encode_images(images)):
        np.testing.assert_allclose(
            a.features, b.features, rtol=0, atol=1e-5, err_msg=_stale(committed, "vision features")
        )
    for num_beams in (1, 3):
        for task in TASKS:
            kwargs = dict(
                max_new_tokens=16, num_beams=num_beams, output_scores=True, return_dict_in_generate=True
            )
            got = ours.generate(images, [task, task], **kwargs)
            expected = theirs.generate(images, [task, task], **kwargs)
            where = f"{task}, {num_beams} beam(s)"
            assert np.array_equal(got.sequences, expected.sequences), _stale(committed, f"ids of {where}")
            np.testing.assert_allclose(
                got.transition_scores,
                expected.transition_scores,
                rtol=0,
                atol=1e-4,
                err_msg=_stale(committed, f"scores of {where}"),
            )


@pytest.mark.parametrize("size, seed", [((1, 1), 0), ((96, 80), 5), ((640, 480), 3), ((33, 70), 2)])
def test_the_tests_image_maker_draws_the_export_checks_images(size, seed):
    assert np.array_equal(
        np.asarray(make_test_image(*size, seed=seed)), np.asarray(export_test_image(*size, seed=seed))
    )
