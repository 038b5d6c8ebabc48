"""Fill a Hugging Face cache with a tiny RANDOM-weight model under a real hub id, without the internet.

Builds the tiny checkpoint, exports it in the onnx-community layout, serves it from the loopback hub stand-in
(``tests/helpers/hubstub.py``) as ``--repo`` and downloads it with the runtime's own resolver
(huggingface_hub) into ``--cache``. Afterwards ``HF_HUB_OFFLINE=1 HF_HUB_CACHE=CACHE florence2 run florence-2-base ...`` works, as it
would after a real download. Needs the dev environment (torch + transformers for the export).

    python scripts/prefill_hub_cache.py CACHE [--repo onnx-community/Florence-2-base]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # for tests.helpers.hubstub


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cache", help="the cache folder to fill (HF_HUB_CACHE)")
    parser.add_argument("--repo", default="onnx-community/Florence-2-base")
    args = parser.parse_args()

    from florence2_export import export
    from florence2_export.toy.tiny import write_tiny_checkpoint
    from florence2_runtime.engine.hub import resolve_model
    from tests.helpers.hubstub import HubStub, StubRepo, folder_files, huggingface_hub_at

    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = write_tiny_checkpoint(Path(tmp) / "checkpoint", size="tiny", seed=0)
        folder = Path(tmp) / "community"
        export(checkpoint, folder, quiet=True, layout="onnx-community")
        with HubStub({args.repo: StubRepo(folder_files(folder))}) as hub, huggingface_hub_at(hub.url):
            resolved = resolve_model(args.repo, cache_dir=args.cache, local_files_only=False)
        print(f"{args.repo}: {len(resolved.files)} files in {resolved.folder}")


if __name__ == "__main__":
    main()
