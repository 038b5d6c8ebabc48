"""The runtime works with torch, transformers and optimum made unimportable."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from tests.helpers.blocked_imports import TORCH, source
from tests.helpers.images import make_test_image

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import florence2_runtime
    from florence2_runtime import Florence2

    model = Florence2.from_pretrained({folder!r})
    out = {{
        "ids": model.generate([{image!r}], ["<OD>"], max_new_tokens=12, num_beams=3).tolist(),
        "run": model.run({image!r}, "<CAPTION_TO_PHRASE_GROUNDING>", text="a ball", max_new_tokens=12),
        "loaded": sorted(m for m in sys.modules if m.split(".")[0] in {blocked!r}),
    }}
    print(json.dumps(out))
    """
)


def test_runtime_runs_without_torch_and_transformers(tiny_folder, tiny_model, tmp_path):
    image = tmp_path / "image.png"
    make_test_image(96, 80, seed=5).save(image)
    script = source() + SCRIPT.format(blocked=TORCH, folder=str(tiny_folder), image=str(image))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.splitlines()[-1])
    assert out["loaded"] == []
    # the same answers as in this process (which may have torch), which tests/parity prove equal to transformers
    assert out["ids"] == tiny_model.generate([image], ["<OD>"], max_new_tokens=12, num_beams=3).tolist()
    assert out["run"] == tiny_model.run(
        image, "<CAPTION_TO_PHRASE_GROUNDING>", text="a ball", max_new_tokens=12
    )


def test_runtime_sources_do_not_import_torch():
    """A static check on top of the runtime one: no runtime module mentions these imports."""
    from pathlib import Path

    import florence2_runtime

    root = Path(florence2_runtime.__file__).parent
    for path in root.rglob("*.py"):
        for line in path.read_text().splitlines():
            words = line.split()
            if words[:1] in (["import"], ["from"]) and len(words) > 1:
                assert words[1].split(".")[0] not in TORCH, f"{path}: {line.strip()}"


def test_the_in_process_blocker_refuses_torch_when_asked():
    """With FLORENCE2_TESTS_BLOCK_TORCH=1 (scripts/test.sh's run of tests/runtime) this very process cannot
    import torch or transformers; without it nothing is blocked."""
    import importlib
    import os

    from tests.helpers.blocked_imports import ENV, BlockedImports

    blocking = any(isinstance(finder, BlockedImports) for finder in sys.meta_path)
    assert blocking == (os.environ.get(ENV) == "1")
    if blocking:
        for name in TORCH:
            with pytest.raises(ImportError, match="blocked"):
                importlib.import_module(name)
