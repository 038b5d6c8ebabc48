"""Write the model folders the runtime tests load, committed under ``tests/data/models/``.

    python scripts/make_test_models.py

Both are exports of the tiny random-weight checkpoint ``florence2_export.toy.tiny.write_tiny_checkpoint(
size="tiny", seed=0)`` (128 px, 17 image tokens, a 1817-token vocabulary), the checkpoint the parity tests
build in their run:

- ``tiny/``: the native layout (``florence2_config.json``, ``onnx/*.onnx`` + ``.onnx_data``),
- ``tiny-community/``: the onnx-community layout (``layout="onnx-community"``).

Needs the ``export`` extra (torch, transformers). ``tests/export/test_test_data.py`` fails, naming this
script, when a fresh export no longer computes what the committed folders compute; run it then and commit
the result. The folders are replaced whole; the checkpoint itself is written to a temporary folder.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "tests" / "data" / "models"
SOURCE = "florence2_export.toy.tiny.write_tiny_checkpoint(size='tiny', seed=0)"
LAYOUTS = {"tiny": "native", "tiny-community": "onnx-community"}


def write_test_models(out: Path = MODELS) -> list[Path]:
    """Export the tiny checkpoint in every layout of :data:`LAYOUTS` under ``out``; returns the folders."""
    from florence2_export import export
    from florence2_export.toy.tiny import write_tiny_checkpoint
    from florence2_runtime.engine.config import CONFIG_FILE, RuntimeConfig

    written = []
    with tempfile.TemporaryDirectory() as work:
        checkpoint = write_tiny_checkpoint(Path(work) / "checkpoint", size="tiny", seed=0)
        for name, layout in LAYOUTS.items():
            folder = Path(work) / name
            export(checkpoint, folder, quiet=True, layout=layout)
            if (folder / CONFIG_FILE).is_file():  # it would record the checkpoint's temporary path
                replace(RuntimeConfig.load(folder), source=SOURCE).save(folder)
            target = out / name
            if target.exists():
                shutil.rmtree(target)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copytree(folder, target)
            written.append(target)
    return written


def main() -> int:
    for folder in write_test_models():
        size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
        print(f"wrote {folder.relative_to(ROOT)} ({size / 2**20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
