"""Run model folders in the onnx-community layout (onnx-community/Florence-2-*, transformers.js exports).

Graphs and tensor names: :func:`florence2_runtime.engine.graphs.community_graphs`. Per request:

1. ``vision_encoder``: pixel_values -> image features; ``embed_tokens``: prompt ids -> embeddings;
   ``encoder_model`` over ``[image features; prompt embeddings]`` -> encoder hidden states.
2. First decoder step: ``decoder_model`` (or ``decoder_model_merged`` with ``use_cache_branch=False``)
   on the decoder start token; it returns every layer's cross-attention K/V, kept fixed afterwards.
3. Later steps: ``decoder_with_past_model`` (or the merged graph with ``use_cache_branch=True``).

:class:`CommunityDecoderInference` implements the ``Inference`` protocol of
:mod:`florence2_runtime.generation`, so greedy and beam search run unchanged. Graphs with float16
inputs (``*_fp16.onnx``) are fed float16; logits come back as float32.

Without ``florence2_config.json`` the runtime config is built from the transformers files of the folder
(:func:`community_runtime_config`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelFileError
from ..inputs.image_size import ImageSize
from ..inputs.tokenizer import IMAGE, Florence2Tokenizer, read_tokenizer_file
from .config import CONFIG_FILE, RuntimeConfig, read_json, square_image_size
from .graphs import (
    ONNX_DIR,
    PRECISION_SUFFIXES,
    USE_CACHE_BRANCH,
    GraphSpec,
    community_graphs,
    graph_file_candidates,
    seq2seq_kv_names,
)
from .providers import create_session

LAYOUT = "onnx-community"
ProviderList = list[tuple[str, dict[str, Any]]]
ProvidersFor = ProviderList | Callable[[GraphSpec], ProviderList]
ORT_TYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(bool)": np.bool_,
}


def find_graph_file(onnx_dir: Path, filename: str, precision: str | None = None) -> Path | None:
    """The file for ``filename`` in ``onnx_dir``: exactly ``precision``'s suffix if given, else the first
    present in :data:`PRECISION_SUFFIXES` order (plain fp32 first); None if there is none."""
    if precision is not None:
        suffix = "" if precision in ("", "fp32") else f"_{precision.lstrip('_')}"
        if suffix not in PRECISION_SUFFIXES:
            raise ValueError(
                f"precision must be one of fp32, {', '.join(s[1:] for s in PRECISION_SUFFIXES[1:])}; "
                f"got {precision!r}"
            )
        names = [filename.removesuffix(".onnx") + suffix + ".onnx"]
    else:
        names = graph_file_candidates(filename)
    return next((onnx_dir / n for n in names if (onnx_dir / n).is_file()), None)


def _require_graph(onnx_dir: Path, filename: str, precision: str | None) -> Path:
    path = find_graph_file(onnx_dir, filename, precision)
    if path is None:
        what = f"with suffix for precision {precision!r}" if precision else "nor a precision variant of it"
        raise ModelFileError(
            onnx_dir / filename, f"file not found ({what}; an onnx-community folder needs it)"
        )
    return path


class _Graph:
    """One session plus its declared input types: feeds are picked by name and cast to what it declares."""

    def __init__(self, path: Path, providers, options):
        self.path = path
        self.session = create_session(path, providers, options)
        self.input_types = {i.name: ORT_TYPES.get(i.type) for i in self.session.get_inputs()}
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, outputs: list[str] | None, values: dict[str, np.ndarray]) -> list[np.ndarray]:
        feed = {}
        for name, dtype in self.input_types.items():
            if name not in values:
                raise ModelFileError(
                    self.path, f"graph input {name!r} is not one this runtime knows how to feed"
                )
            v = values[name]
            feed[name] = v if dtype is None or v.dtype == dtype else v.astype(dtype)
        return self.session.run(outputs, feed)


class CommunitySessions:
    """The graphs of an onnx-community folder. precision: a suffix to insist on (``"fp16"``, ``"quantized"``,
    ...); None takes, per graph, the first file present in :data:`PRECISION_SUFFIXES` order."""

    layout = LAYOUT

    def __init__(
        self,
        folder: Path,
        cfg: RuntimeConfig,
        providers: ProvidersFor,
        session_options=None,
        precision: str | None = None,
    ):
        """providers: one ``[(name, options)]`` list for every graph, or a function of the graph's spec."""
        self.cfg = cfg
        self.specs = community_graphs(cfg.dims)
        onnx_dir = Path(folder) / ONNX_DIR
        providers_for = providers if callable(providers) else (lambda spec: providers)

        def open_graph(name, path):
            return _Graph(path, providers_for(self.specs[name]), session_options)

        self.vision, self.embed_tokens, self.encoder = (
            open_graph(n, _require_graph(onnx_dir, self.specs[n].filename, precision))
            for n in ("vision_encoder", "embed_tokens", "encoder_model")
        )
        pair = {
            n: find_graph_file(onnx_dir, self.specs[n].filename, precision)
            for n in ("decoder_model", "decoder_with_past_model")
        }
        if all(pair.values()):
            self.decoder_first, self.decoder_later = (open_graph(n, p) for n, p in pair.items())
            self.merged = False
        else:
            merged = find_graph_file(onnx_dir, self.specs["decoder_model_merged"].filename, precision)
            if merged is None:
                missing = next(self.specs[n].filename for n, p in pair.items() if p is None)
                raise ModelFileError(
                    onnx_dir / missing,
                    "file not found (an onnx-community folder needs "
                    "decoder_model.onnx + decoder_with_past_model.onnx or decoder_model_merged.onnx)",
                )
            self.decoder_first = self.decoder_later = open_graph("decoder_model_merged", merged)
            self.merged = True
        layers = cfg.decoder_layers
        self.first_outputs = ["logits", *seq2seq_kv_names("present", layers)]
        self.later_outputs = ["logits", *seq2seq_kv_names("present", layers, ("decoder",))]
        self.past_names = seq2seq_kv_names("past_key_values", layers)

    @property
    def providers(self) -> list[str]:
        return self.decoder_later.session.get_providers()

    @property
    def files(self) -> list[Path]:
        """The graph files in use."""
        return [
            g.path
            for g in (self.vision, self.embed_tokens, self.encoder, self.decoder_first, self.decoder_later)
        ]

    def embed(self, ids: np.ndarray) -> np.ndarray:
        """ids [B, T] -> embeddings [B, T, D] in the graph's float type."""
        return self.embed_tokens.run(None, {"input_ids": np.ascontiguousarray(ids, dtype=np.int64)})[0]

    def encode_images(self, pixel_values: np.ndarray) -> np.ndarray:
        """pixel_values [B, 3, H, W] float32 -> image_features [B, I, D]."""
        return self.vision.run(None, {"pixel_values": pixel_values})[0]

    def encode_text(self, text_ids: np.ndarray, text_mask: np.ndarray, image_features: np.ndarray):
        """text_ids, text_mask [B, T] -> ([encoder hidden states [B, I + T, D]], encoder mask [B, I + T])."""
        b = text_ids.shape[0]
        mask = np.concatenate(
            [np.ones((b, image_features.shape[1]), np.int64), text_mask.astype(np.int64)], axis=1
        )
        embeds = self.embed(text_ids)
        inputs = np.concatenate([image_features.astype(embeds.dtype, copy=False), embeds], axis=1)
        states = self.encoder.run(None, {"inputs_embeds": inputs, "attention_mask": mask})[0]
        return [states], mask


class CommunityDecoderInference:
    """The decoder step of an onnx-community folder with its KV cache (the ``Inference`` protocol).

    Rows are ``batch * num_beams`` sequences. The decoder graphs take the encoder states per row, so each
    item's are repeated for its beams; the cross-attention K/V come from the first step and stay fixed (the
    beams of an item keep their own copy); only the self-attention cache is reordered.
    """

    def __init__(
        self,
        sessions: CommunitySessions,
        cross: list[np.ndarray],
        encoder_mask: np.ndarray,
        rows: int | None = None,
    ):
        """cross: ``[encoder hidden states [B, S, D]]``, encoder_mask [B, S]; rows: items * beams (default B)."""
        self.sessions = sessions
        per_item = 1 if rows is None else rows // encoder_mask.shape[0]
        self.encoder_states = np.repeat(cross[0], per_item, axis=0) if per_item > 1 else cross[0]
        self.encoder_mask = np.repeat(encoder_mask, per_item, axis=0) if per_item > 1 else encoder_mask
        self.self_kv: list[np.ndarray] | None = None  # per layer key, value [N, h, P, hd]
        self.cross_kv: list[np.ndarray] = []
        self.length = 0

    def logits(self, tokens: np.ndarray) -> np.ndarray:
        """tokens [N, T] (sequences so far) -> next-token logits [N, V] float32 (feeds new tokens only)."""
        s = self.sessions
        embeds = s.embed(tokens[:, self.length :])
        values = {
            "inputs_embeds": embeds,
            "encoder_hidden_states": self.encoder_states,
            "encoder_attention_mask": self.encoder_mask,
        }
        if self.self_kv is None:
            if s.merged:
                values.update(self._empty_past(embeds))
                values[USE_CACHE_BRANCH] = np.array([False])
            logits, *kv = s.decoder_first.run(s.first_outputs, values)
            self.self_kv = [t for i in range(0, len(kv), 4) for t in kv[i : i + 2]]
            self.cross_kv = [t for i in range(0, len(kv), 4) for t in kv[i + 2 : i + 4]]
        else:
            values.update(zip(s.past_names, self._past()))
            values[USE_CACHE_BRANCH] = np.array([True])
            logits, *self.self_kv = s.decoder_later.run(s.later_outputs, values)
        self.length = tokens.shape[1]
        return np.ascontiguousarray(logits[:, -1, :], dtype=np.float32)

    def _cache(self) -> list[np.ndarray]:
        if self.self_kv is None:
            raise RuntimeError("the decoder cache is empty until the first logits() call")
        return self.self_kv

    def _past(self) -> list[np.ndarray]:
        """Per layer: decoder key, value, encoder key, value (the order of ``past_key_values.*``)."""
        self_kv, out = self._cache(), []
        for i in range(0, len(self_kv), 2):
            out += [*self_kv[i : i + 2], *self.cross_kv[i : i + 2]]
        return out

    def _empty_past(self, embeds: np.ndarray) -> dict[str, np.ndarray]:
        cfg = self.sessions.cfg
        empty = np.zeros(
            (embeds.shape[0], cfg.decoder_heads, 0, cfg.d_model // cfg.decoder_heads), embeds.dtype
        )
        return {n: empty for n in self.sessions.past_names}

    def rearrange_kv_cache(self, source_indices: np.ndarray) -> None:
        """Row i continues the sequence of row ``source_indices[i]`` (beams stay within their item)."""
        self.self_kv = [np.take(p, source_indices, axis=0) for p in self._cache()]


# ----------------------------------------------------------------------------- tokenizer and runtime config


def community_tokenizer(path: str | Path) -> Florence2Tokenizer:
    """The ``tokenizer.json`` of an onnx-community folder. Those converted from the original checkpoints have
    no ``<image>`` token (this layout never needs one); it is added after the vocabulary, where transformers'
    conversion puts it, so that the tokenizer is a complete Florence-2 one."""
    from tokenizers import AddedToken

    tok = read_tokenizer_file(path)
    if tok.token_to_id(IMAGE) is None:
        tok.add_special_tokens([AddedToken(IMAGE, special=True, normalized=False)])
    return Florence2Tokenizer(tok, path)


def _get(d: dict, path: Path, *keys: str):
    """``d[k1][k2]...`` or a ModelFileError naming the missing key."""
    v: Any = d
    for i, k in enumerate(keys):
        if not isinstance(v, dict) or k not in v:
            raise ModelFileError(path, f"missing {'.'.join(keys[: i + 1])!r}")
        v = v[k]
    return v


def _image_size(pre: dict, path: Path) -> ImageSize:
    """The processor's resize target, checked (:func:`~.config.square_image_size`)."""
    for key in ("size", "crop_size"):
        size = pre.get(key)
        if isinstance(size, dict) and "height" in size and "width" in size:
            found = (size["width"], size["height"])
        elif isinstance(size, dict) and "shortest_edge" in size:
            found = (size["shortest_edge"],) * 2
        else:
            continue
        try:
            return square_image_size(found)
        except ValueError as e:
            raise ModelFileError(path, f"{key}: {e}") from None
    raise ModelFileError(path, "no image size ('size' with 'height' and 'width')")


def _per_channel(
    pre: dict, path: Path, key: str, default: tuple[float, float, float]
) -> tuple[float, float, float]:
    """``pre[key]`` as three floats (one per RGB channel); ``default`` when absent."""
    values = pre.get(key, default)
    try:
        r, g, b = (float(x) for x in values)
    except (TypeError, ValueError):
        raise ModelFileError(path, f"{key} must be three numbers (R, G, B), got {values!r:.100}") from None
    return r, g, b


def _grid(side: int) -> int:
    for stride in (4, 2, 2, 2):  # DaViT's four patch embeddings
        side = -(-side // stride)
    return side


def community_runtime_config(folder: str | Path) -> RuntimeConfig:
    """A :class:`RuntimeConfig` from ``florence2_config.json`` if present, else from the transformers files:
    ``config.json`` (transformers-native or original remote-code style), ``preprocessor_config.json`` (sizes,
    normalisation, task prompt tables if any), ``generation_config.json`` and, if present,
    ``processor_config.json`` (banned grounding phrases)."""
    folder = Path(folder)
    if (folder / CONFIG_FILE).is_file():
        return RuntimeConfig.load(folder)
    cfg_path, pre_path = folder / "config.json", folder / "preprocessor_config.json"
    cfg, pre = read_json(cfg_path), read_json(pre_path)
    gen = (
        read_json(folder / "generation_config.json") if (folder / "generation_config.json").is_file() else {}
    )
    proc = read_json(folder / "processor_config.json") if (folder / "processor_config.json").is_file() else {}
    text = _get(cfg, cfg_path, "text_config")
    ids = {
        **{k: v for k, v in text.items() if k.endswith("token_id")},
        **{k: v for k, v in gen.items() if k.endswith("token_id")},
    }
    image_size = _image_size(pre, pre_path)
    banned = (
        (proc.get("post_processor_config") or {})
        .get("phrase_grounding", {})
        .get("banned_grounding_tokens", [])
    )
    return RuntimeConfig(
        d_model=int(_get(text, cfg_path, "d_model")),
        vocab_size=int(text.get("vocab_size") or _get(cfg, cfg_path, "vocab_size")),
        encoder_layers=int(_get(text, cfg_path, "encoder_layers")),
        decoder_layers=int(_get(text, cfg_path, "decoder_layers")),
        encoder_heads=int(_get(text, cfg_path, "encoder_attention_heads")),
        decoder_heads=int(_get(text, cfg_path, "decoder_attention_heads")),
        max_position_embeddings=int(_get(text, cfg_path, "max_position_embeddings")),
        num_image_tokens=int(
            pre.get("image_seq_length") or _grid(image_size.height) * _grid(image_size.width) + 1
        ),
        image_token_id=int(cfg.get("image_token_id", -1)),  # unused: this layout concatenates image features
        bos_token_id=int(ids.get("bos_token_id", 0)),
        pad_token_id=int(ids.get("pad_token_id", 1)),
        eos_token_id=int(ids.get("eos_token_id", 2)),
        decoder_start_token_id=int(ids.get("decoder_start_token_id", 2)),
        image_size=image_size,
        image_mean=_per_channel(pre, pre_path, "image_mean", RuntimeConfig.image_mean),
        image_std=_per_channel(pre, pre_path, "image_std", RuntimeConfig.image_std),
        rescale_factor=float(pre.get("rescale_factor", RuntimeConfig.rescale_factor)),
        resample=int(pre.get("resample", RuntimeConfig.resample)),
        task_prompts_without_inputs=dict(pre.get("task_prompts_without_inputs") or {}),
        task_prompts_with_input=dict(pre.get("task_prompts_with_input") or {}),
        banned_grounding_tokens=tuple(banned),
        source=str(folder),
    )
