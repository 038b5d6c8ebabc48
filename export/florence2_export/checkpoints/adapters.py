"""PEFT adapters (LoRA and the other types peft merges) merged into a Florence-2 model before export.

An adapter is a folder (or hub id) with ``adapter_config.json`` and ``adapter_model.safetensors`` (or
``adapter_model.bin``), as ``PeftModel.save_pretrained`` writes it. :func:`merge_adapters` loads each one
onto the transformers-native model with peft, checks that peft's merge leaves the model's outputs as
they are with the adapter unmerged, merges it (``merge_and_unload``, float32) and goes on with the
next one, in order. Adapters saved against the original remote-code layout are renamed first
(:mod:`.original_adapter`).

Every problem raises :class:`AdapterError` (a ``ValueError``) naming the adapter and what is wrong.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from florence2_runtime.errors import require
from florence2_runtime.inputs.image_size import ImageSize

from .errors import AdapterError
from .loading import _hub_reachable

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAMES = ("adapter_model.safetensors", "adapter_model.bin")  # peft's order of preference
ADAPTER_NAME = "default"
# max |merged - unmerged| of the logits allowed, relative to max |unmerged logits| (float32 round-off only)
MERGE_TOLERANCE = 1e-4


@dataclass(frozen=True)
class Adapter:
    """One adapter as given (``name``: the path or hub id) and where its files are."""

    name: str
    folder: Path

    @property
    def config_path(self) -> Path:
        return self.folder / CONFIG_NAME

    @property
    def weights_path(self) -> Path:
        for name in WEIGHTS_NAMES:
            if (self.folder / name).is_file():
                return self.folder / name
        raise AdapterError(f"adapter {self.name}: no {' or '.join(WEIGHTS_NAMES)} in {self.folder}")

    def config_dict(self) -> dict:
        try:
            d = json.loads(self.config_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise AdapterError(f"adapter {self.name}: {self.config_path} is not valid JSON ({e})") from None
        if not isinstance(d, dict):
            raise AdapterError(f"adapter {self.name}: {self.config_path} is not a JSON object")
        return d

    def record(self) -> dict:
        """What the export stores about this adapter: name or path, type, weights file and hashes."""
        return {
            "name": self.name,
            "peft_type": self.config_dict().get("peft_type"),
            "weights": self.weights_path.name,
            "sha256": _sha256(self.weights_path),
            "config_sha256": _sha256(self.config_path),
        }


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def resolve_adapter(spec: str | Path) -> Adapter:
    """A local adapter folder, or a hub id fetched with huggingface_hub (only the adapter's files)."""
    path = Path(spec)
    if path.exists():
        if not path.is_dir():
            raise AdapterError(f"adapter {spec}: expected an adapter folder, found a file")
        if not (path / CONFIG_NAME).is_file():
            hint = " (this is a full checkpoint: give it as BASE)" if (path / "config.json").is_file() else ""
            raise AdapterError(f"adapter {spec}: no {CONFIG_NAME}; this is not a PEFT adapter folder{hint}")
        return Adapter(str(spec), path)
    if str(spec).startswith((".", "/", "~")) or str(spec).count("/") != 1:
        raise AdapterError(f"adapter {spec}: no such folder (and not a hub id of the form 'owner/name')")
    from huggingface_hub import snapshot_download

    local_only = not _hub_reachable()
    try:
        folder = Path(
            snapshot_download(
                str(spec), local_files_only=local_only, allow_patterns=[CONFIG_NAME, *WEIGHTS_NAMES]
            )
        )
    except Exception as e:
        where = (
            "the hub is not reachable and the local hub cache has no copy"
            if local_only
            else "cannot fetch it"
        )
        raise AdapterError(
            f"adapter {spec}: {where}: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
        ) from None
    if not (folder / CONFIG_NAME).is_file():
        raise AdapterError(f"adapter {spec}: the hub repo has no {CONFIG_NAME}; it is not a PEFT adapter")
    return Adapter(str(spec), folder)


def base_of(adapter: Adapter) -> str:
    """The adapter's ``base_model_name_or_path`` (the checkpoint to export when BASE is omitted)."""
    base = adapter.config_dict().get("base_model_name_or_path")
    if not base:
        raise AdapterError(
            f"adapter {adapter.name}: adapter_config.json names no base_model_name_or_path; "
            "give the base checkpoint explicitly"
        )
    return str(base)


# ----------------------------------------------------------------------------- merging


def _peft_config(adapter: Adapter):
    peft = require("peft", "export", "merging a PEFT adapter")
    try:
        config = peft.PeftConfig.from_pretrained(str(adapter.folder))
    except Exception as e:
        raise AdapterError(f"adapter {adapter.name}: peft cannot read {CONFIG_NAME} ({e})") from None
    if config.is_prompt_learning:
        raise AdapterError(
            f"adapter {adapter.name}: {config.peft_type} is a prompt-learning adapter; only adapters "
            "that peft merges into the weights (LoRA, ...) can be exported"
        )
    config.inference_mode = True
    return config


def _logits(model, probe: dict):
    import torch

    with torch.no_grad():
        return model(**probe).logits


def probe_inputs(model, image_size: ImageSize, num_image_tokens: int) -> dict:
    """A fixed forward input for the merge check: a random image [1, 3, H, W], a short prompt, 4 decoder tokens."""
    import torch

    text = model.config.text_config
    g = torch.Generator().manual_seed(0)
    prompt = [text.bos_token_id, 7, 11, text.eos_token_id]
    ids = torch.tensor([[model.config.image_token_id] * num_image_tokens + prompt])
    return {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "pixel_values": torch.randn(1, 3, image_size.height, image_size.width, generator=g),
        "decoder_input_ids": torch.tensor([[text.decoder_start_token_id, text.bos_token_id, 5, 9]]),
    }


def merge_adapter(model, adapter: Adapter, probe: dict):
    """Load one adapter onto ``model`` with peft, check the merge is exact, return the merged model."""
    import torch

    peft = require("peft", "export", "merging a PEFT adapter")
    from peft.utils import get_peft_model_state_dict, load_peft_weights, set_peft_model_state_dict

    from .original_adapter import is_original_adapter, to_native

    config = _peft_config(adapter)
    try:
        tensors = load_peft_weights(str(adapter.weights_path.parent), device="cpu")
    except Exception as e:
        raise AdapterError(f"adapter {adapter.name}: cannot read {adapter.weights_path.name} ({e})") from None
    tensors = {k: v.float() if v.is_floating_point() else v for k, v in tensors.items()}  # merged in float32
    original = is_original_adapter(tensors, adapter.name)
    if original:
        config, tensors = to_native(config, tensors, model, adapter.name)
    try:
        peft_model = peft.get_peft_model(model, config, adapter_name=ADAPTER_NAME)
    except (ValueError, TypeError, NotImplementedError, KeyError) as e:
        raise AdapterError(
            f"adapter {adapter.name}: peft cannot apply it to this model ({str(e).splitlines()[0]})"
        ) from None
    expected = get_peft_model_state_dict(peft_model, adapter_name=ADAPTER_NAME)
    tensors = _fit_shapes(tensors, expected, adapter.name, pad_vocab=original)
    result = set_peft_model_state_dict(peft_model, tensors, adapter_name=ADAPTER_NAME)
    unexpected = list(getattr(result, "unexpected_keys", []) or [])
    if unexpected:
        raise AdapterError(
            f"adapter {adapter.name}: {len(unexpected)} tensors match nothing in the model, "
            f"e.g. {', '.join(sorted(unexpected)[:3])}"
        )
    peft_model.eval()
    _untie_adapted_weights(peft_model)
    before = _logits(peft_model, probe)
    try:
        merged = peft_model.merge_and_unload()
    except (ValueError, TypeError, NotImplementedError, AttributeError) as e:
        raise AdapterError(
            f"adapter {adapter.name}: peft cannot merge a {config.peft_type} adapter into this model "
            f"({str(e).splitlines()[0]})"
        ) from None
    merged.eval()
    after = _logits(merged, probe)
    diff = float((after - before).abs().max())
    scale = float(before.abs().max()) or 1.0
    if not torch.isfinite(after).all() or diff > MERGE_TOLERANCE * scale:
        raise AdapterError(
            f"adapter {adapter.name}: peft's merge changes the model's outputs (max |merged - unmerged| "
            f"logit = {diff:.2e} of max {scale:.2e}); this adapter cannot be exported exactly"
        )
    _check_single_embedding_table(merged, adapter.name)
    return merged


def _untie_adapted_weights(peft_model) -> None:
    """Give every adapted layer whose weight is shared with another module (``lm_head`` and the token
    embeddings are one tensor) its own copy of it: peft merges in place, which would otherwise change the
    other modules too (and no longer equal the unmerged model). The values, so the outputs, are unchanged."""
    from collections import Counter

    from peft.tuners.tuners_utils import BaseTunerLayer
    from torch import nn

    uses = Counter(id(p) for _, p in peft_model.named_parameters(remove_duplicate=False))
    for module in peft_model.modules():
        if isinstance(module, BaseTunerLayer):
            base = module.get_base_layer()
            weight = getattr(base, "weight", None)
            if isinstance(weight, nn.Parameter) and uses[id(weight)] > 1:
                base.weight = nn.Parameter(weight.detach().clone(), requires_grad=False)


def _fit_shapes(tensors: dict, expected: dict, name: str, pad_vocab: bool) -> dict:
    """The adapter's tensors with peft's expected shapes; original-layout tensors of the embeddings and
    ``lm_head`` get zero rows (columns) for the tokens the native vocabulary adds (``<image>``)."""
    import torch

    out = {}
    for key, t in tensors.items():
        want = expected.get(key)
        if want is None or tuple(want.shape) == tuple(t.shape):
            out[key] = t
            continue
        grows = [i for i, (a, b) in enumerate(zip(t.shape, want.shape)) if a != b]
        vocab_module = any(part in key for part in ("embed_tokens", ".shared.", "lm_head"))
        if not (
            pad_vocab
            and vocab_module
            and t.dim() == want.dim()
            and len(grows) == 1
            and t.shape[grows[0]] < want.shape[grows[0]]
        ):
            raise AdapterError(
                f"adapter {name}: tensor {key} has shape {tuple(t.shape)}, the model expects "
                f"{tuple(want.shape)} (an adapter for another base model?)"
            )
        axis = grows[0]
        pad_shape = list(t.shape)
        pad_shape[axis] = want.shape[axis] - t.shape[axis]
        out[key] = torch.cat([t, torch.zeros(pad_shape, dtype=t.dtype)], dim=axis)
    missing = sorted(set(expected) - set(out))
    if missing:
        raise AdapterError(
            f"adapter {name}: {len(missing)} tensors peft expects are not in the adapter file, "
            f"e.g. {', '.join(missing[:3])}"
        )
    return out


def _check_single_embedding_table(model, name: str) -> None:
    """The export holds one token table for the prompt and the decoder tokens (``embed_tokens.npy``)."""
    import torch

    lm = model.model.language_model
    shared, dec = lm.shared, lm.decoder.embed_tokens
    same = torch.equal(shared.weight, dec.weight) and getattr(shared, "embed_scale", 1.0) == getattr(
        dec, "embed_scale", 1.0
    )
    if not same:
        raise AdapterError(
            f"adapter {name}: after merging, the decoder's token embeddings (decoder.embed_tokens) differ from the "
            "prompt's (shared); an export holds one embedding table for both, so this adapter cannot be exported "
            "(train the embeddings as one, e.g. modules_to_save with ensure_weight_tying=True)"
        )


def merge_adapters(model, adapters: list[Adapter], image_size: ImageSize, num_image_tokens: int):
    """Merge ``adapters`` into ``model`` in order (float32); returns the merged transformers model."""
    probe = probe_inputs(model, image_size, num_image_tokens)
    for adapter in adapters:
        model = merge_adapter(model, adapter, probe)
    return model
