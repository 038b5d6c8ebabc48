"""Declarative description of the ONNX graphs, shared by the exporter and the runtime.

Each graph is a :class:`GraphSpec`: file name, ordered inputs and outputs with dtypes and
axes. An axis is either a fixed size (``int``) or a symbolic name (``str``); symbolic names
become dynamic axes in the exported graph. The exporter reads input/output names and
dynamic axes from here; the runtime reads the same names to feed and fetch. Neither half
spells out a KV-cache name by hand.

Native layout (``onnx/`` of an exported folder)::

    vision_encoder  pixel_values [batch, 3, H, W]                      -> image_features [batch, I, D]
    text_encoder    inputs_embeds [batch, text, D], image_features,
                    attention_mask [batch, I + text]                    -> cross.{i}.{key,value}
    decoder         inputs_embeds [batch, step, D], encoder_attention_mask,
                    past.{i}.{key,value}, cross.{i}.{key,value}         -> logits [batch, V], present.{i}.{key,value}

The token embedding table is stored as ``embed_tokens.npy`` (memory-mapped by the runtime,
which looks up the prompt's and each step's tokens) and inside the decoder graph only as the
weight of ``lm_head``. The decoder graph has no control flow: the first step runs it with a
zero-length past.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..inputs.image_size import ImageSize

ONNX_DIR = "onnx"  # the folder of a model folder that holds its graphs (both layouts)
KV_KINDS = ("key", "value")


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output: name, element type (numpy name) and axes."""

    name: str
    dtype: str
    axes: tuple[int | str, ...]


@dataclass(frozen=True)
class GraphSpec:
    """One ONNX graph: where it lives and what it takes and gives."""

    name: str
    filename: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        """``{tensor name: {axis index: symbolic name}}`` for every symbolic axis."""
        axes: dict[str, dict[int, str]] = {}
        for t in (*self.inputs, *self.outputs):
            dyn = {i: a for i, a in enumerate(t.axes) if isinstance(a, str)}
            if dyn:
                axes[t.name] = dyn
        return axes


@dataclass(frozen=True)
class ModelDims:
    """The sizes the graphs depend on (read from the runtime config)."""

    image_size: ImageSize  # the (width, height) the vision encoder takes
    num_image_tokens: int
    d_model: int
    vocab_size: int
    decoder_layers: int
    decoder_heads: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "image_size", ImageSize.of(self.image_size))

    @property
    def head_dim(self) -> int:
        return self.d_model // self.decoder_heads


def kv_names(prefix: str, layers: int) -> list[str]:
    """``[f"{prefix}.{i}.key", f"{prefix}.{i}.value", ...]`` in layer order."""
    return [f"{prefix}.{i}.{kind}" for i in range(layers) for kind in KV_KINDS]


def _kv(
    prefix: str, dims: ModelDims, seq_axis: str, dtype: str, batch_axis: str = "batch"
) -> tuple[TensorSpec, ...]:
    axes = (batch_axis, dims.decoder_heads, seq_axis, dims.head_dim)
    return tuple(TensorSpec(n, dtype, axes) for n in kv_names(prefix, dims.decoder_layers))


def native_graphs(dims: ModelDims, float_dtype: str = "float32") -> dict[str, GraphSpec]:
    """The three graphs of the native layout, keyed by role."""
    h, w = dims.image_size.height, dims.image_size.width
    f = float_dtype
    vision = GraphSpec(
        "vision_encoder",
        "vision_encoder.onnx",
        inputs=(TensorSpec("pixel_values", f, ("batch", 3, h, w)),),
        outputs=(TensorSpec("image_features", f, ("batch", dims.num_image_tokens, dims.d_model)),),
    )
    text = GraphSpec(
        "text_encoder",
        "text_encoder.onnx",
        inputs=(
            TensorSpec("inputs_embeds", f, ("batch", "text_length", dims.d_model)),
            TensorSpec("image_features", f, ("batch", dims.num_image_tokens, dims.d_model)),
            TensorSpec("attention_mask", "int64", ("batch", "encoder_length")),
        ),
        outputs=_kv("cross", dims, "encoder_length", f),
    )
    decoder = GraphSpec(
        "decoder",
        "decoder.onnx",
        inputs=(
            TensorSpec("inputs_embeds", f, ("batch", "step_length", dims.d_model)),
            # one cross K/V and mask per item, shared by its beams (rows = items * beams, beams contiguous)
            TensorSpec("encoder_attention_mask", "int64", ("items", "encoder_length")),
            *_kv("past", dims, "past_length", f),
            *_kv("cross", dims, "encoder_length", f, batch_axis="items"),
        ),
        outputs=(
            TensorSpec("logits", "float32", ("batch", dims.vocab_size)),
            *_kv("present", dims, "total_length", f),
        ),
    )
    return {g.name: g for g in (vision, text, decoder)}


EMBEDDINGS_FILE = "embed_tokens.npy"


def kv_gather_graph(dims: ModelDims, float_dtype: str = "float32") -> GraphSpec:
    """Row gather over a set of K/V tensors, run where the tensors live (IO binding).

    ``kv_gather  index [rows], kv.{i}.{key,value} [batch, heads, length, head_dim] -> gathered.{i}.* [rows, ...]``

    One graph serves both device-side jobs of beam search: repeating each item's cross K/V for
    its beams (index ``[0, 0, 0, 1, 1, 1]``) and reordering the self-attention cache after a
    step (index = the beams' source rows). Not a part of the model: the exporter writes it next to
    the model graphs, and the plain (host) path does not need it.
    """
    axes = ("batch", dims.decoder_heads, "length", dims.head_dim)
    out_axes = ("rows", dims.decoder_heads, "length", dims.head_dim)
    return GraphSpec(
        "kv_gather",
        "kv_gather.onnx",
        inputs=(
            TensorSpec("index", "int64", ("rows",)),
            *(TensorSpec(n, float_dtype, axes) for n in kv_names("kv", dims.decoder_layers)),
        ),
        outputs=tuple(
            TensorSpec(n, float_dtype, out_axes) for n in kv_names("gathered", dims.decoder_layers)
        ),
    )


# ----------------------------------------------------------------------------- onnx-community layout
# The layout of onnx-community/Florence-2-* (read by transformers.js and others), optimum's names:
#
#     vision_encoder            pixel_values [batch, 3, H, W]                -> image_features [batch, I, D]
#     embed_tokens              input_ids [batch, T]                         -> inputs_embeds [batch, T, D]
#     encoder_model             inputs_embeds [batch, S, D], attention_mask  -> last_hidden_state
#     decoder_model             inputs_embeds, encoder_hidden_states,
#                               encoder_attention_mask                       -> logits [batch, T, V],
#                                                                present.{i}.{decoder,encoder}.{key,value}
#     decoder_with_past_model   inputs_embeds, encoder_attention_mask,
#                               past_key_values.{i}.{decoder,encoder}.*      -> logits, present.{i}.decoder.*
#     decoder_model_merged      both of the above behind an If on use_cache_branch [1] bool
#
# The encoder input is ``[image_features; prompt embeddings]``. Every file may carry a precision suffix
# (``decoder_model_merged_fp16.onnx``); :data:`PRECISION_SUFFIXES` lists them in the runtime's order
# of preference.

PRECISION_SUFFIXES = ("", "_fp16", "_quantized", "_int8", "_uint8", "_q4", "_q4f16", "_bnb4")
COMMUNITY_ENCODERS = (
    "vision_encoder.onnx",
    "embed_tokens.onnx",
    "encoder_model.onnx",
)  # every folder has them
COMMUNITY_DECODERS = (("decoder_model_merged.onnx",), ("decoder_model.onnx", "decoder_with_past_model.onnx"))
"""The decoder forms of the layout, one of which a folder needs (the hub fetches the first one present)."""
KV_PARTS = ("decoder", "encoder")
USE_CACHE_BRANCH = "use_cache_branch"


def seq2seq_kv_names(prefix: str, layers: int, parts: tuple[str, ...] = KV_PARTS) -> list[str]:
    """``[f"{prefix}.{i}.{part}.{key|value}", ...]``: per layer the decoder (self), then encoder pair."""
    return [f"{prefix}.{i}.{part}.{kind}" for i in range(layers) for part in parts for kind in KV_KINDS]


def _seq2seq_kv(prefix: str, dims: ModelDims, self_axis: str, parts: tuple[str, ...], dtype: str):
    seq = {"decoder": self_axis, "encoder": "encoder_sequence_length"}
    return tuple(
        TensorSpec(name, dtype, ("batch", dims.decoder_heads, seq[name.split(".")[2]], dims.head_dim))
        for name in seq2seq_kv_names(prefix, dims.decoder_layers, parts)
    )


def community_graphs(dims: ModelDims, float_dtype: str = "float32") -> dict[str, GraphSpec]:
    """The graphs of the onnx-community layout, keyed by role (= file stem without precision suffix)."""
    h, w = dims.image_size.height, dims.image_size.width
    f, d = float_dtype, dims.d_model
    enc_embeds = TensorSpec("inputs_embeds", f, ("batch", "encoder_sequence_length", d))
    dec_embeds = TensorSpec("inputs_embeds", f, ("batch", "decoder_sequence_length", d))
    enc_states = TensorSpec("encoder_hidden_states", f, ("batch", "encoder_sequence_length", d))
    enc_mask = TensorSpec("encoder_attention_mask", "int64", ("batch", "encoder_sequence_length"))
    logits = TensorSpec("logits", "float32", ("batch", "decoder_sequence_length", dims.vocab_size))
    past = _seq2seq_kv("past_key_values", dims, "past_decoder_sequence_length", KV_PARTS, f)
    graphs = [
        GraphSpec(
            "vision_encoder",
            "vision_encoder.onnx",
            inputs=(TensorSpec("pixel_values", f, ("batch", 3, h, w)),),
            outputs=(TensorSpec("image_features", f, ("batch", dims.num_image_tokens, d)),),
        ),
        GraphSpec(
            "embed_tokens",
            "embed_tokens.onnx",
            inputs=(TensorSpec("input_ids", "int64", ("batch", "sequence_length")),),
            outputs=(TensorSpec("inputs_embeds", f, ("batch", "sequence_length", d)),),
        ),
        GraphSpec(
            "encoder_model",
            "encoder_model.onnx",
            inputs=(enc_embeds, TensorSpec("attention_mask", "int64", ("batch", "encoder_sequence_length"))),
            outputs=(TensorSpec("last_hidden_state", f, ("batch", "encoder_sequence_length", d)),),
        ),
        GraphSpec(
            "decoder_model",
            "decoder_model.onnx",
            inputs=(dec_embeds, enc_states, enc_mask),
            outputs=(logits, *_seq2seq_kv("present", dims, "decoder_sequence_length", KV_PARTS, f)),
        ),
        GraphSpec(
            "decoder_with_past_model",
            "decoder_with_past_model.onnx",
            inputs=(dec_embeds, enc_mask, *past),
            outputs=(logits, *_seq2seq_kv("present", dims, "total_sequence_length", ("decoder",), f)),
        ),
        GraphSpec(
            "decoder_model_merged",
            "decoder_model_merged.onnx",
            inputs=(dec_embeds, enc_states, enc_mask, *past, TensorSpec(USE_CACHE_BRANCH, "bool", (1,))),
            outputs=(logits, *_seq2seq_kv("present", dims, "total_sequence_length", KV_PARTS, f)),
        ),
    ]
    return {g.name: g for g in graphs}


def graph_file_candidates(filename: str) -> list[str]:
    """``decoder_model.onnx`` -> ``["decoder_model.onnx", "..._fp16.onnx", ...]``, preferred first."""
    stem = filename.removesuffix(".onnx")
    return [f"{stem}{suffix}.onnx" for suffix in PRECISION_SUFFIXES]


LAYOUT_MARKERS = {
    "native": ("text_encoder.onnx", "decoder.onnx"),
    "onnx-community": ("encoder_model.onnx", "embed_tokens.onnx"),
}
"""Per layout, the graph files whose presence in ``onnx/`` (any precision suffix) identifies it."""


def detect_layout(onnx_dir: str | Path) -> str | None:
    """The layout of an ``onnx/`` folder: the first layout with one of its marker files present, or None."""
    folder = Path(onnx_dir)
    for layout, markers in LAYOUT_MARKERS.items():
        if any((folder / name).is_file() for m in markers for name in graph_file_candidates(m)):
            return layout
    return None
