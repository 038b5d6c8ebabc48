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
    decoder         input_ids [batch, step], encoder_attention_mask,
                    past.{i}.{key,value}, cross.{i}.{key,value}         -> logits [batch, V], present.{i}.{key,value}

The token embedding table is stored once, as ``embed_tokens.npy`` (memory-mapped by the
runtime, read for prompt tokens only) and inside the decoder graph (tied with ``lm_head``).
The decoder graph has no control flow: the first step runs it with a zero-length past.
"""

from __future__ import annotations

from dataclasses import dataclass

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

    image_size: tuple[int, int]  # (height, width) the vision encoder takes
    num_image_tokens: int
    d_model: int
    vocab_size: int
    decoder_layers: int
    decoder_heads: int

    @property
    def head_dim(self) -> int:
        return self.d_model // self.decoder_heads


def kv_names(prefix: str, layers: int) -> list[str]:
    """``[f"{prefix}.{i}.key", f"{prefix}.{i}.value", ...]`` in layer order."""
    return [f"{prefix}.{i}.{kind}" for i in range(layers) for kind in KV_KINDS]


def _kv(prefix: str, dims: ModelDims, seq_axis: str, dtype: str) -> tuple[TensorSpec, ...]:
    axes = ("batch", dims.decoder_heads, seq_axis, dims.head_dim)
    return tuple(TensorSpec(n, dtype, axes) for n in kv_names(prefix, dims.decoder_layers))


def native_graphs(dims: ModelDims, float_dtype: str = "float32") -> dict[str, GraphSpec]:
    """The three graphs of the native layout, keyed by role."""
    h, w = dims.image_size
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
            TensorSpec("input_ids", "int64", ("batch", "step_length")),
            TensorSpec("encoder_attention_mask", "int64", ("batch", "encoder_length")),
            *_kv("past", dims, "past_length", f),
            *_kv("cross", dims, "encoder_length", f),
        ),
        outputs=(
            TensorSpec("logits", "float32", ("batch", dims.vocab_size)),
            *_kv("present", dims, "total_length", f),
        ),
    )
    return {g.name: g for g in (vision, text, decoder)}


EMBEDDINGS_FILE = "embed_tokens.npy"
