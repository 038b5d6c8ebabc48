"""Load a Florence-2 checkpoint (local folder or hub id) with transformers, for export."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from .errors import CheckpointError


def _describe_folder(path: Path) -> dict:
    cfg = path / "config.json"
    if not cfg.is_file():
        raise CheckpointError(f"{path}: no config.json; this is not a Florence-2 checkpoint folder")
    try:
        return json.loads(cfg.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{cfg}: not valid JSON ({e})") from None


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub answers a TCP connection (offline, fail fast instead of retrying)."""
    import os
    import socket
    from urllib.parse import urlparse

    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _original_layout_snapshot(repo_id: str, local_only: bool) -> Path | None:
    """For a hub repo in the original remote-code layout, a local snapshot of its configs, tokenizer and
    weights (never its ``*.py`` files); None for any other repo or when its config cannot be fetched."""
    try:
        from huggingface_hub import hf_hub_download, snapshot_download

        cfg = json.loads(
            Path(hf_hub_download(repo_id, "config.json", local_files_only=local_only)).read_text()
        )
        if "auto_map" not in cfg:
            return None
        return Path(
            snapshot_download(
                repo_id,
                local_files_only=local_only,
                allow_patterns=["*.json", "*.safetensors", "*.bin", "*.txt"],
            )
        )
    except Exception:
        return None


def load_checkpoint(src: str | Path):
    """Return ``(model, processor)`` for a local folder or a hub id, in fp32 eval mode with eager attention.

    Eager attention matters: sdpa bakes the DaViT channel-attention scale in as a constant.
    """
    import torch
    from transformers import AutoProcessor, Florence2ForConditionalGeneration

    path = Path(src)
    if path.exists():
        if not path.is_dir():
            raise CheckpointError(f"{path}: expected a checkpoint folder, found a file")
        cfg = _describe_folder(path)
        if "auto_map" in cfg:  # original remote-code layout: rename its tensors, never run its code
            from .original import convert_original_checkpoint, is_original_layout

            if not is_original_layout(cfg):
                raise CheckpointError(
                    f"{path}: config.json has 'auto_map' but is not a Florence-2 config of the "
                    "original remote-code layout (no vision_config.dim_embed)"
                )
            with tempfile.TemporaryDirectory(prefix="florence2-native-") as tmp:
                return load_checkpoint(convert_original_checkpoint(path, tmp))
        if cfg.get("model_type") != "florence2":
            raise CheckpointError(f"{path}: model_type is {cfg.get('model_type')!r}, expected 'florence2'")
        where = str(path)
    else:
        if str(src).startswith((".", "/", "~")) or str(src).count("/") != 1:
            raise CheckpointError(f"{src}: no such folder (and not a hub id of the form 'owner/name')")
        where = str(src)
    local_only = path.exists() or not _hub_reachable()
    if not path.exists():
        snapshot = _original_layout_snapshot(where, local_only)
        if snapshot is not None:
            return load_checkpoint(snapshot)
    try:
        model = Florence2ForConditionalGeneration.from_pretrained(
            where, attn_implementation="eager", dtype=torch.float32, local_files_only=local_only
        )
        processor = AutoProcessor.from_pretrained(where, local_files_only=local_only)
    except OSError as e:
        hint = ""
        if not path.exists():
            hint = (
                " (the hub is not reachable from here and the local hub cache has no copy)"
                if local_only
                else " (no such model on the hub, or no access to it)"
            )
        raise CheckpointError(f"{src}: cannot load the checkpoint{hint}: {str(e).splitlines()[0]}") from None
    model.eval()
    return model, processor
