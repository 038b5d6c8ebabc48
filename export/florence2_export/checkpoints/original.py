"""Checkpoints in the original remote-code layout (microsoft/Florence-2-*), read without running their code.

Such a folder has a ``config.json`` with ``auto_map`` (pointing at ``modeling_florence2.py``), a DaViT
``vision_config`` (``dim_embed``, ``visual_temporal_embedding``, ``image_pos_embed``), weights named after
the remote-code modules (``vision_tower.*``, ``image_projection``, ``language_model.model.*``) in
``model.safetensors`` or ``pytorch_model.bin``, and a tokenizer without the ``<image>`` token.

:func:`convert_original_checkpoint` writes the same model as a transformers-native checkpoint folder:
configs translated field by field, tensors renamed with :data:`RENAMES` (``image_projection`` transposed),
``<image>`` added to the tokenizer with a zero embedding row (never looked up: the image features replace
it; its logit is 0), the processor files transformers 5 expects. Nothing from the folder is imported or
executed; ``pytorch_model.bin`` is read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

from .errors import CheckpointError
from .processor_config import POST_PROCESSOR_CONFIG

# (original name, native name); {i} {s} {b} {n}: numbers, {kind}: spatial|channel, {rest}: the remainder.
# The first rule whose pattern matches a name applies, in either direction.
RENAMES: tuple[tuple[str, str], ...] = (
    ("vision_tower.convs.{i}.proj.{rest}", "model.vision_tower.convs.{i}.conv.{rest}"),
    ("vision_tower.convs.{i}.norm.{rest}", "model.vision_tower.convs.{i}.norm.{rest}"),
    (
        "vision_tower.blocks.{s}.{b}.{kind}_block.conv{n}.fn.dw.{rest}",
        "model.vision_tower.blocks.{s}.{b}.{kind}_block.conv{n}.{rest}",
    ),
    (
        "vision_tower.blocks.{s}.{b}.spatial_block.window_attn.norm.{rest}",
        "model.vision_tower.blocks.{s}.{b}.spatial_block.norm1.{rest}",
    ),
    (
        "vision_tower.blocks.{s}.{b}.spatial_block.window_attn.fn.{rest}",
        "model.vision_tower.blocks.{s}.{b}.spatial_block.window_attn.{rest}",
    ),
    (
        "vision_tower.blocks.{s}.{b}.channel_block.channel_attn.norm.{rest}",
        "model.vision_tower.blocks.{s}.{b}.channel_block.norm1.{rest}",
    ),
    (
        "vision_tower.blocks.{s}.{b}.channel_block.channel_attn.fn.{rest}",
        "model.vision_tower.blocks.{s}.{b}.channel_block.channel_attn.{rest}",
    ),
    (
        "vision_tower.blocks.{s}.{b}.{kind}_block.ffn.norm.{rest}",
        "model.vision_tower.blocks.{s}.{b}.{kind}_block.norm2.{rest}",
    ),
    (
        "vision_tower.blocks.{s}.{b}.{kind}_block.ffn.fn.net.{rest}",
        "model.vision_tower.blocks.{s}.{b}.{kind}_block.ffn.{rest}",
    ),
    ("image_projection", "model.multi_modal_projector.image_projection.weight"),
    ("image_proj_norm.{rest}", "model.multi_modal_projector.image_proj_norm.{rest}"),
    ("image_pos_embed.{rest}", "model.multi_modal_projector.image_position_embed.{rest}"),
    ("visual_temporal_embed.{rest}", "model.multi_modal_projector.visual_temporal_embed.{rest}"),
    ("language_model.model.{rest}", "model.language_model.{rest}"),
    ("language_model.lm_head.{rest}", "lm_head.{rest}"),
)
TRANSPOSED = {"image_projection"}  # original [in, out] parameter; native nn.Linear weight [out, in]
# native parameters tied to the token embeddings: not stored in a native checkpoint
TIED = (
    "lm_head.weight",
    "model.language_model.encoder.embed_tokens.weight",
    "model.language_model.decoder.embed_tokens.weight",
)
# original tensors with no native counterpart: DaViT's classification head, BART's logits bias (zeros)
IGNORED = re.compile(r"^(vision_tower\.(norms|head|avgpool)\b.*|language_model\.final_logits_bias)$")
EMBEDDINGS = "model.language_model.shared.weight"
IMAGE_TOKEN = "<image>"
PREPROCESSOR_KEYS = (
    "do_resize",
    "size",
    "resample",
    "do_center_crop",
    "crop_size",
    "do_rescale",
    "rescale_factor",
    "do_normalize",
    "image_mean",
    "image_std",
    "do_convert_rgb",
    "image_seq_length",
)
# BART fields the native text config takes from the original one (the rest keep transformers' defaults)
TEXT_KEYS = (
    "vocab_size",
    "d_model",
    "encoder_layers",
    "decoder_layers",
    "encoder_attention_heads",
    "decoder_attention_heads",
    "encoder_ffn_dim",
    "decoder_ffn_dim",
    "max_position_embeddings",
    "activation_function",
    "scale_embedding",
    "dropout",
    "attention_dropout",
    "activation_dropout",
    "init_std",
    "encoder_layerdrop",
    "decoder_layerdrop",
    "bos_token_id",
    "pad_token_id",
    "eos_token_id",
    "decoder_start_token_id",
    "forced_bos_token_id",
    "forced_eos_token_id",
)
VISION_KEYS = (
    "depths",
    "num_heads",
    "num_groups",
    "window_size",
    "patch_size",
    "patch_stride",
    "patch_padding",
    "patch_prenorm",
    "drop_path_rate",
    "projection_dim",
)
GENERATION_KEYS = ("num_beams", "no_repeat_ngram_size", "early_stopping", "max_length", "length_penalty")
_SLOTS = {"i": r"\d+", "s": r"\d+", "b": r"\d+", "n": r"\d+", "kind": "spatial|channel", "rest": r".+"}


def _compile(pattern: str) -> re.Pattern:
    parts = re.split(r"\{(\w+)\}", pattern)
    return re.compile(
        "^"
        + "".join(re.escape(p) if i % 2 == 0 else f"(?P<{p}>{_SLOTS[p]})" for i, p in enumerate(parts))
        + "$"
    )


_RULES = [(_compile(o), o, _compile(n), n) for o, n in RENAMES]


def rename(name: str, to_native: bool = True) -> str | None:
    """A tensor name in the other layout, or None when no rule covers it."""
    for o_re, o_fmt, n_re, n_fmt in _RULES:
        m = (o_re if to_native else n_re).match(name)
        if m:
            return (n_fmt if to_native else o_fmt).format(**m.groupdict())
    return None


def is_original_layout(config: dict) -> bool:
    """Whether a config.json describes a remote-code (original layout) Florence-2 checkpoint."""
    return (
        "auto_map" in config
        and isinstance(config.get("vision_config"), dict)
        and "dim_embed" in config["vision_config"]
    )


# ----------------------------------------------------------------------------- original -> native


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: file not found") from None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from None


def native_config_dict(original: dict, vocab_size: int, image_token_id: int) -> dict:
    """The transformers-native ``Florence2Config`` arguments for an original ``config.json``."""
    text, vision = original.get("text_config") or {}, original.get("vision_config") or {}
    try:
        vision_cfg = {k: vision[k] for k in VISION_KEYS if k in vision}
        vision_cfg["embed_dim"] = list(vision["dim_embed"])
        vision_cfg.setdefault("projection_dim", original["projection_dim"])
        vision_cfg["max_temporal_embeddings"] = vision.get("visual_temporal_embedding", {}).get(
            "max_temporal_embeddings", 100
        )
        vision_cfg["max_position_embeddings"] = vision.get("image_pos_embed", {}).get(
            "max_pos_embeddings", 50
        )
        text_cfg = {k: text[k] for k in TEXT_KEYS if k in text}
        for k in (
            "d_model",
            "encoder_layers",
            "decoder_layers",
            "encoder_attention_heads",
            "decoder_attention_heads",
        ):
            text_cfg[k] = text[k]
    except KeyError as e:
        raise CheckpointError(f"config.json of the original layout lacks {e.args[0]!r}") from None
    text_cfg["vocab_size"] = vocab_size
    return {"text_config": text_cfg, "vision_config": vision_cfg, "image_token_id": image_token_id}


def _load_tensors(folder: Path) -> dict:
    """The state dict of an original checkpoint: safetensors (single or sharded) or pytorch_model.bin."""
    import torch
    from safetensors.torch import load_file

    index = folder / "model.safetensors.index.json"
    if (folder / "model.safetensors").is_file():
        return load_file(str(folder / "model.safetensors"))
    if index.is_file():
        tensors = {}
        for shard in sorted(set(_read_json(index)["weight_map"].values())):
            tensors.update(load_file(str(folder / shard)))
        return tensors
    if (folder / "pytorch_model.bin").is_file():
        return torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
    raise CheckpointError(
        f"{folder}: no model.safetensors, model.safetensors.index.json or pytorch_model.bin"
    )


def _native_tensors(original: dict, expected: set[str], vocab_size: int) -> dict:
    """Rename (and transpose, pad) original tensors to exactly the native checkpoint's tensor set."""
    import torch

    out, unknown = {}, []
    for name, t in original.items():
        new = rename(name)
        if new is None:
            if not IGNORED.match(name):
                unknown.append(name)
            elif name.endswith("final_logits_bias") and torch.count_nonzero(t):
                raise CheckpointError(
                    "language_model.final_logits_bias is not zero: the native model has no "
                    "logits bias, so this checkpoint cannot be converted exactly"
                )
            continue
        out[new] = t.t().contiguous() if name in TRANSPOSED else t
    if unknown:
        raise CheckpointError(
            f"{len(unknown)} tensors of the original checkpoint have no native counterpart, "
            f"e.g. {', '.join(sorted(unknown)[:3])}"
        )
    shared = out.get(EMBEDDINGS)
    if shared is None:
        raise CheckpointError("the original checkpoint has no language_model.model.shared.weight")
    head = out.pop("lm_head.weight", None)
    if head is not None and not torch.equal(head, shared):
        raise CheckpointError(
            "language_model.lm_head.weight differs from the token embeddings; only tied "
            "heads (as in every published Florence-2) can be converted"
        )
    for name in TIED:
        out.pop(name, None)
    if shared.shape[0] < vocab_size:  # rows for added tokens (<image>): zero
        pad = torch.zeros(vocab_size - shared.shape[0], shared.shape[1], dtype=shared.dtype)
        out[EMBEDDINGS] = torch.cat([shared, pad])
    missing = expected - set(out) - set(TIED)
    optional = {n for n in missing if n.endswith("visual_temporal_embed.pos_idx_to_embed")}  # a fixed buffer
    if missing - optional:
        raise CheckpointError(
            f"the original checkpoint lacks {len(missing - optional)} tensors, "
            f"e.g. {', '.join(sorted(missing - optional)[:3])}"
        )
    extra = set(out) - expected
    if extra:
        raise CheckpointError(
            f"renamed tensors unknown to the native model, e.g. {', '.join(sorted(extra)[:3])}"
        )
    return {k: v.float().contiguous() if v.is_floating_point() else v.contiguous() for k, v in out.items()}


def _save_tokenizer(src: Path, dst: Path) -> tuple[int, int]:
    """The original tokenizer plus ``<image>``, saved as a native one; returns (its size, the <image> id)."""
    from tokenizers import AddedToken, Tokenizer
    from transformers import BartTokenizer

    settings = _read_json(src / "tokenizer_config.json") if (src / "tokenizer_config.json").is_file() else {}
    if (src / "tokenizer.json").is_file():
        backend = Tokenizer.from_file(str(src / "tokenizer.json"))
    else:  # vocab.json + merges.txt only
        backend = BartTokenizer.from_pretrained(str(src)).backend_tokenizer
    if backend.token_to_id(IMAGE_TOKEN) is None:
        backend.add_special_tokens([AddedToken(IMAGE_TOKEN, special=True, normalized=False)])
    tokenizer = BartTokenizer(
        tokenizer_object=backend,
        model_max_length=int(settings.get("model_max_length", 1024)),
        extra_special_tokens={"image_token": IMAGE_TOKEN},
    )
    tokenizer.save_pretrained(str(dst))
    image_token_id = backend.token_to_id(IMAGE_TOKEN)
    if image_token_id is None:  # added above when missing
        raise CheckpointError(f"{src}: the tokenizer has no {IMAGE_TOKEN} token")
    return backend.get_vocab_size(with_added_tokens=True), image_token_id


def convert_original_checkpoint(src: str | Path, dst: str | Path) -> Path:
    """Write the original-layout checkpoint folder ``src`` as a transformers-native checkpoint in ``dst``."""
    import torch
    from safetensors.torch import save_file
    from transformers import Florence2Config, Florence2ForConditionalGeneration, GenerationConfig

    src, dst = Path(src), Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    original = _read_json(src / "config.json")
    if not is_original_layout(original):
        raise CheckpointError(
            f"{src}: config.json is not a Florence-2 config in the original remote-code layout"
        )
    n_tokens, image_token_id = _save_tokenizer(src, dst)
    tensors = _load_tensors(src)
    rows = tensors.get("language_model.model.shared.weight")
    vocab_size = max(n_tokens, rows.shape[0] if rows is not None else 0)
    config = Florence2Config(**native_config_dict(original, vocab_size, image_token_id))
    with torch.device("meta"):
        expected = set(Florence2ForConditionalGeneration(config).state_dict())
    save_file(
        _native_tensors(tensors, expected, vocab_size),
        str(dst / "model.safetensors"),
        metadata={"format": "pt"},
    )
    config.save_pretrained(str(dst))

    gen_path = src / "generation_config.json"
    gen = (
        _read_json(gen_path)
        if gen_path.is_file()
        else {
            k: v
            for k, v in (original.get("text_config") or {}).items()
            if k in TEXT_KEYS[-6:] + GENERATION_KEYS
        }
    )
    gen = {k: v for k, v in gen.items() if not k.startswith("_") and k != "transformers_version"}
    GenerationConfig(**gen).save_pretrained(str(dst))

    pre = _read_json(src / "preprocessor_config.json")
    pre = {
        "image_processor_type": "CLIPImageProcessor",
        **{k: pre[k] for k in PREPROCESSOR_KEYS if k in pre},
        "processor_class": "Florence2Processor",
    }
    (dst / "preprocessor_config.json").write_text(json.dumps(pre, indent=2) + "\n", encoding="utf-8")
    (dst / "processor_config.json").write_text(
        json.dumps(
            {
                "processor_class": "Florence2Processor",
                "num_additional_image_tokens": 0,
                "post_processor_config": copy.deepcopy(POST_PROCESSOR_CONFIG),
            },
            indent=2,
        )
        + "\n",
        encoding="utf-8",
    )
    return dst
