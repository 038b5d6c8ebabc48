"""Checkpoints and adapters in the original remote-code layout, written from native ones: what
``florence2_export.checkpoints.original`` and ``.original_adapter`` read, made here from the tiny checkpoint
(the published ones cannot be downloaded in the test run). Needs torch, safetensors.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from florence2_export.checkpoints.errors import CheckpointError
from florence2_export.checkpoints.original import (
    IMAGE_TOKEN,
    TEXT_KEYS,
    TRANSPOSED,
    VISION_KEYS,
    rename,
)
from florence2_export.checkpoints.original_adapter import PREFIX

REMOTE_CODE_AUTO_MAP = {  # what the published config.json files name
    "AutoConfig": "configuration_florence2.Florence2Config",
    "AutoModelForCausalLM": "modeling_florence2.Florence2ForConditionalGeneration",
}


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _strip(key: str) -> str:
    return key[len(PREFIX) :] if key.startswith(PREFIX) else key


def original_config_dict(native: dict) -> dict:
    """An original-layout ``config.json`` for a transformers-native one (vocabulary up to <image>)."""
    text, vision = native["text_config"], native["vision_config"]
    vocab = int(native["image_token_id"])
    text_cfg = {k: text[k] for k in TEXT_KEYS if k in text}
    text_cfg.update(model_type="florence2_language", vocab_size=vocab, is_encoder_decoder=True)
    vision_cfg = {k: vision[k] for k in VISION_KEYS if k in vision}
    vision_cfg.update(
        model_type="davit",
        dim_embed=vision["embed_dim"],
        enable_checkpoint=False,
        visual_temporal_embedding={
            "type": "COSINE",
            "max_temporal_embeddings": vision["max_temporal_embeddings"],
        },
        image_pos_embed={"type": "learned_abs_2d", "max_pos_embeddings": vision["max_position_embeddings"]},
        image_feature_source=["spatial_avg_pool", "temporal_avg_pool"],
    )
    return {
        "architectures": ["Florence2ForConditionalGeneration"],
        "auto_map": dict(REMOTE_CODE_AUTO_MAP),
        "model_type": "florence2",
        "projection_dim": vision["projection_dim"],
        "vocab_size": vocab,
        "is_encoder_decoder": True,
        "bos_token_id": text.get("bos_token_id", 0),
        "eos_token_id": text.get("eos_token_id", 2),
        "pad_token_id": text.get("pad_token_id", 1),
        "text_config": text_cfg,
        "vision_config": vision_cfg,
    }


_TRAP = 'raise RuntimeError("remote code of a Florence-2 test checkpoint was executed")\n'


def write_original_checkpoint(native_dir: str | Path, out_dir: str | Path) -> Path:
    """Write the native checkpoint ``native_dir`` in the original remote-code layout (for tests).

    Drops ``<image>`` (its token and embedding row), stores the tied copies and a zero logits bias as the
    remote-code model does, saves ``pytorch_model.bin``, and adds ``*_florence2.py`` files that raise if
    anything ever imports them.
    """
    import torch
    from safetensors.torch import load_file

    native_dir, out = Path(native_dir), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    native = _read_json(native_dir / "config.json")
    config = original_config_dict(native)
    vocab = config["vocab_size"]
    tensors = {}
    for name, t in load_file(str(native_dir / "model.safetensors")).items():
        new = rename(name, to_native=False)
        if new is None:
            raise CheckpointError(f"no original name for native tensor {name}")
        tensors[new] = t.t().contiguous() if new in TRANSPOSED else t
    shared = tensors["language_model.model.shared.weight"][:vocab].clone()
    tensors["language_model.model.shared.weight"] = shared
    for copy_name in (
        "language_model.model.encoder.embed_tokens.weight",
        "language_model.model.decoder.embed_tokens.weight",
        "language_model.lm_head.weight",
    ):
        tensors[copy_name] = shared.clone()
    tensors["language_model.final_logits_bias"] = torch.zeros(1, vocab)
    torch.save(tensors, out / "pytorch_model.bin")
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")

    tok = _read_json(native_dir / "tokenizer.json")
    tok["added_tokens"] = [a for a in tok["added_tokens"] if a["content"] != IMAGE_TOKEN]
    (out / "tokenizer.json").write_text(json.dumps(tok, ensure_ascii=False) + "\n", encoding="utf-8")
    (out / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "BartTokenizer",
                "model_max_length": 1024,
                "bos_token": "<s>",
                "eos_token": "</s>",
                "unk_token": "<unk>",
                "pad_token": "<pad>",
                "mask_token": "<mask>",
                "add_prefix_space": False,
            },
            indent=2,
        )
        + "\n",
        encoding="utf-8",
    )
    pre = _read_json(native_dir / "preprocessor_config.json")
    pre["auto_map"] = {"AutoProcessor": "processing_florence2.Florence2Processor"}
    (out / "preprocessor_config.json").write_text(json.dumps(pre, indent=2) + "\n", encoding="utf-8")
    gen = _read_json(native_dir / "generation_config.json")
    (out / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n", encoding="utf-8")
    for name in ("configuration_florence2.py", "modeling_florence2.py", "processing_florence2.py"):
        (out / name).write_text(_TRAP, encoding="utf-8")
    return out


def write_original_adapter(native_dir, out_dir, vocab_size: int, base: str | None = None):
    """Rewrite a native PEFT adapter folder in the original layout (for tests).

    Tensor names, full module names in ``target_modules`` / ``modules_to_save`` and the pattern keys are
    renamed to the remote-code modules (short names such as ``q_proj`` stay: peft matches them by suffix);
    axes of embedding and ``lm_head`` tensors longer than ``vocab_size`` (the original vocabulary, without
    ``<image>``) are cut to it. ``base``: the new ``base_model_name_or_path``.
    """
    from safetensors.torch import load_file, save_file

    native_dir, out = Path(native_dir), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = json.loads((native_dir / "adapter_config.json").read_text())
    tensors = load_file(str(native_dir / "adapter_model.safetensors"))

    def original_module(native: str) -> str | None:
        for leaf in ("weight", "bias"):
            o = rename(f"{native}.{leaf}", to_native=False)
            if o and o.endswith("." + leaf):
                return o[: -len(leaf) - 1]
        return None

    def rename_names(names):
        return None if names is None else sorted({original_module(n) or n for n in names})

    renamed = {}
    for key, t in tensors.items():
        parts = _strip(key).split(".")
        cut = next(c for c in range(len(parts) - 1, 0, -1) if original_module(".".join(parts[:c])))
        new = f"{PREFIX}{original_module('.'.join(parts[:cut]))}.{'.'.join(parts[cut:])}"
        if any(p in key for p in ("embed_tokens", ".shared.", "lm_head")):
            t = t[tuple(slice(0, vocab_size) if n > vocab_size else slice(None) for n in t.shape)]
        renamed[new] = t.contiguous()
    save_file(renamed, str(out / "adapter_model.safetensors"), metadata={"format": "pt"})
    if isinstance(config.get("target_modules"), list):
        config["target_modules"] = rename_names(config["target_modules"])
    config["modules_to_save"] = rename_names(config.get("modules_to_save"))
    for field in ("rank_pattern", "alpha_pattern"):
        config[field] = {re.escape(original_module(k) or k): v for k, v in (config.get(field) or {}).items()}
    if base is not None:
        config["base_model_name_or_path"] = str(base)
    (out / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")
    return out
