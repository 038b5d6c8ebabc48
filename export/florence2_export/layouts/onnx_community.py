"""Export to the onnx-community layout (the one transformers.js reads), from the loaded torch model.

Output folder::

    config.json  generation_config.json          the checkpoint's transformers configs
    tokenizer.json  tokenizer_config.json        the tokenizer
    preprocessor_config.json                     image processor + task prompt tables (for transformers.js)
    processor_config.json                        transformers' post-processor config
    onnx/vision_encoder.onnx  onnx/embed_tokens.onnx  onnx/encoder_model.onnx
    onnx/decoder_model.onnx  onnx/decoder_with_past_model.onnx  onnx/decoder_model_merged.onnx

Graph names, tensor names and dynamic axes come from :func:`florence2_runtime.engine.graphs.community_graphs`.
``decoder_model_merged`` is built from the two decoder graphs by :mod:`florence2_export.layouts.merge`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from florence2_runtime.engine.config import RuntimeConfig
from florence2_runtime.engine.graphs import ONNX_DIR, USE_CACHE_BRANCH, GraphSpec, community_graphs
from florence2_runtime.tasks.postprocess import TASK_PARSE_TYPES

from ..graphs.modules import DecoderCore, VisionEncoder, _additive_padding_mask, _heads
from ..graphs.to_onnx import export_graph
from ..graphs.vision import DaViTEncoder
from ..progress import log
from ..verify import make_test_image
from .merge import merge_decoders

TORCH_GRAPHS = ("vision_encoder", "embed_tokens", "encoder_model", "decoder_model", "decoder_with_past_model")

# transformers.js' Florence2Processor reads the task -> parse type table from preprocessor_config.json
# (transformers keeps it in code; the runtime's post-processor holds the same table)
TASKS_ANSWER_POST_PROCESSING_TYPE = dict(TASK_PARSE_TYPES)


# ----------------------------------------------------------------------------- torch wrappers


class EmbedTokens(nn.Module):
    """input_ids [B, T] -> inputs_embeds [B, T, D] (the shared, scaled token embedding)."""

    def __init__(self, model):
        super().__init__()
        self.shared = model.model.language_model.shared

    def forward(self, input_ids):
        return self.shared(input_ids)


class EncoderModel(nn.Module):
    """BART encoder: inputs_embeds [B, S, D] (image features, prompt), attention_mask [B, S] -> [B, S, D]."""

    def __init__(self, model):
        super().__init__()
        self.encoder = model.model.language_model.encoder

    def forward(self, inputs_embeds, attention_mask):
        enc = self.encoder
        x = inputs_embeds + enc.embed_positions(inputs_embeds[:, :, -1])
        x = enc.layernorm_embedding(x)
        mask = _additive_padding_mask(attention_mask, x.dtype)
        for layer in enc.layers:
            x = layer(x, mask)
        return x


class _DecoderCore(DecoderCore):
    """:class:`~florence2_export.graphs.modules.DecoderCore` with the cross K/V computed here and logits at every position."""

    def cross_kv(self, encoder_hidden_states) -> list[torch.Tensor]:
        """[B, S, D] -> per layer key, value [B, h, S, hd]."""
        out = []
        for layer in self.decoder.layers:
            attn = layer.encoder_attn
            out += [
                _heads(attn.k_proj(encoder_hidden_states), self.heads),
                _heads(attn.v_proj(encoder_hidden_states), self.heads),
            ]
        return out

    def logits(self, inputs_embeds, encoder_attention_mask, past, cross):
        """-> (logits [B, T, V], presents)."""
        x, presents = self.run(inputs_embeds, encoder_attention_mask, past, cross)
        return self.lm_head(x), presents


class DecoderModel(_DecoderCore):
    """First step: inputs_embeds [B, T, D], encoder_hidden_states [B, S, D], encoder_attention_mask [B, S]
    -> logits [B, T, V], then per layer decoder key/value [B, h, T, hd], encoder key/value [B, h, S, hd].
    """

    def forward(self, inputs_embeds, encoder_hidden_states, encoder_attention_mask):
        cross = self.cross_kv(encoder_hidden_states)
        logits, presents = self.logits(inputs_embeds, encoder_attention_mask, None, cross)
        out = []
        for i in range(self.num_layers):
            out += [presents[2 * i], presents[2 * i + 1], cross[2 * i], cross[2 * i + 1]]
        return (logits, *out)


class DecoderWithPastModel(_DecoderCore):
    """Later steps: inputs_embeds [B, T, D], encoder_attention_mask [B, S], past_key_values per layer
    (decoder key, value [B, h, P, hd], encoder key, value [B, h, S, hd]) -> logits [B, T, V], presents.
    """

    def forward(self, inputs_embeds, encoder_attention_mask, *past_key_values):
        per_layer = [past_key_values[4 * i : 4 * i + 4] for i in range(self.num_layers)]
        past = [t for p in per_layer for t in p[:2]]
        cross = [t for p in per_layer for t in p[2:]]
        logits, presents = self.logits(inputs_embeds, encoder_attention_mask, past, cross)
        return (logits, *presents)


def community_modules(model) -> dict[str, nn.Module]:
    """The torch module behind each graph exported from PyTorch (the merged decoder is assembled from two)."""
    return {
        "vision_encoder": VisionEncoder(model),
        "embed_tokens": EmbedTokens(model),
        "encoder_model": EncoderModel(model),
        "decoder_model": DecoderModel(model),
        "decoder_with_past_model": DecoderWithPastModel(model),
    }


def example_inputs(cfg: RuntimeConfig, batch: int = 2, text: int = 5, step: int = 2, past: int = 3) -> dict:
    """Random example inputs per graph: batch 2, two new tokens, non-empty past, one padded row."""
    g = torch.Generator().manual_seed(0)
    h, w = cfg.image_size.height, cfg.image_size.width
    d, heads, hd = cfg.d_model, cfg.decoder_heads, cfg.d_model // cfg.decoder_heads
    enc_len = cfg.num_image_tokens + text
    mask = torch.ones(batch, enc_len, dtype=torch.int64)
    mask[1, -2:] = 0
    states = torch.randn(batch, enc_len, d, generator=g)
    embeds = torch.randn(batch, step, d, generator=g)
    kv = []
    for _ in range(cfg.decoder_layers):
        kv += [torch.randn(batch, heads, past, hd, generator=g) for _ in range(2)]
        kv += [torch.randn(batch, heads, enc_len, hd, generator=g) for _ in range(2)]
    return {
        "vision_encoder": (torch.randn(batch, 3, h, w, generator=g),),
        "embed_tokens": (torch.randint(0, cfg.vocab_size, (batch, text), generator=g),),
        "encoder_model": (states, mask),
        "decoder_model": (embeds, states, mask),
        "decoder_with_past_model": (embeds, mask, *kv),
    }


# ----------------------------------------------------------------------------- json files


def write_json_files(model, processor, out: Path) -> None:
    """config.json, generation_config.json, tokenizer and processor files: what transformers.js reads."""
    model.config.save_pretrained(out)
    (out / "generation_config.json").write_text(
        json.dumps(model.generation_config.to_diff_dict(), indent=1) + "\n", encoding="utf-8"
    )
    processor.save_pretrained(out)
    pre = (
        processor.image_processor.to_dict()
    )  # transformers 5 nests it in processor_config.json; others read this
    pre.setdefault("image_seq_length", int(processor.num_image_tokens))
    pre.setdefault("processor_class", "Florence2Processor")
    pre["task_prompts_without_inputs"] = dict(processor.task_prompts_without_inputs)
    pre["task_prompts_with_input"] = dict(processor.task_prompts_with_input)
    pre["tasks_answer_post_processing_type"] = dict(
        getattr(processor, "tasks_answer_post_processing_type", None) or TASKS_ANSWER_POST_PROCESSING_TYPE
    )
    (out / "preprocessor_config.json").write_text(
        json.dumps(pre, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )


# ----------------------------------------------------------------------------- export and check


def export_community(
    model, processor, cfg: RuntimeConfig, out: Path, *, check: bool = True, quiet: bool = False
) -> dict[str, float]:
    """Write the onnx-community layout of ``model`` into ``out``; return max |onnx - torch| per graph."""
    specs = community_graphs(cfg.dims)
    modules = community_modules(model)  # what each graph is checked against
    exported = {
        **modules,
        "vision_encoder": DaViTEncoder(model, cfg.image_size),
    }  # same function, faster graph
    args = example_inputs(cfg)
    onnx_dir = out / ONNX_DIR
    onnx_dir.mkdir(parents=True, exist_ok=True)
    with torch.inference_mode(False), torch.no_grad():
        for i, name in enumerate(TORCH_GRAPHS, 1):
            log(f"[{i}/{len(specs)}] exporting {name} ...", quiet)
            export_graph(exported[name].eval(), args[name], specs[name], onnx_dir / specs[name].filename)
    log(f"[{len(specs)}/{len(specs)}] merging the decoders into decoder_model_merged ...", quiet)
    merge_decoders(
        onnx_dir / specs["decoder_model"].filename,
        onnx_dir / specs["decoder_with_past_model"].filename,
        onnx_dir / specs["decoder_model_merged"].filename,
        specs["decoder_model_merged"],
    )
    write_json_files(model, processor, out)
    if not check:
        return {}
    log("checking each graph against PyTorch ...", quiet)
    return check_community_graphs(model, processor, onnx_dir, cfg, modules, specs)


def _max_diff(onnx_out, torch_out) -> float:
    return max(
        (
            float(np.max(np.abs(np.asarray(a) - b.detach().numpy()))) if np.asarray(a).size else 0.0
            for a, b in zip(onnx_out, torch_out)
        ),
        default=0.0,
    )


def check_community_graphs(
    model, processor, onnx_dir: Path, cfg: RuntimeConfig, modules: dict, specs: dict[str, GraphSpec]
) -> dict[str, float]:
    """Run every graph and its torch counterpart on real inputs (two images, two prompts of different lengths,
    two decoder steps); return max |onnx - torch| per graph. The merged decoder is run in both branches.
    """
    import onnxruntime as ort

    sess = {
        name: ort.InferenceSession(str(onnx_dir / spec.filename), providers=["CPUExecutionProvider"])
        for name, spec in specs.items()
    }
    images = [make_test_image(64, 48, seed=1), make_test_image(33, 70, seed=2)]
    batch = processor(
        text=["<OD>", "<CAPTION_TO_PHRASE_GROUNDING>a red ball on a table"],
        images=images,
        return_tensors="pt",
        padding=True,
    )
    text_ids = batch["input_ids"][:, cfg.num_image_tokens :]
    mask = batch["attention_mask"]
    b = text_ids.shape[0]
    diffs: dict[str, float] = {}

    def run(name, feed):
        return sess[name].run(None, {k: v.numpy() for k, v in feed.items()})

    with torch.no_grad():
        pixel_values = batch["pixel_values"].float()
        feats = modules["vision_encoder"](pixel_values)
        diffs["vision_encoder"] = _max_diff(run("vision_encoder", {"pixel_values": pixel_values}), [feats])
        embeds = modules["embed_tokens"](text_ids)
        diffs["embed_tokens"] = _max_diff(run("embed_tokens", {"input_ids": text_ids}), [embeds])
        states = modules["encoder_model"](torch.cat([feats, embeds], dim=1), mask)
        diffs["encoder_model"] = _max_diff(
            run(
                "encoder_model", {"inputs_embeds": torch.cat([feats, embeds], dim=1), "attention_mask": mask}
            ),
            [states],
        )

        start = modules["embed_tokens"](torch.full((b, 1), cfg.decoder_start_token_id, dtype=torch.int64))
        first = modules["decoder_model"](start, states, mask)
        first_feed = {"inputs_embeds": start, "encoder_hidden_states": states, "encoder_attention_mask": mask}
        diffs["decoder_model"] = _max_diff(run("decoder_model", first_feed), first)

        past = dict(zip(specs["decoder_with_past_model"].input_names[2:], first[1:]))
        nxt = modules["embed_tokens"](torch.full((b, 1), cfg.bos_token_id, dtype=torch.int64))
        second = modules["decoder_with_past_model"](nxt, mask, *past.values())
        diffs["decoder_with_past_model"] = _max_diff(
            run("decoder_with_past_model", {"inputs_embeds": nxt, "encoder_attention_mask": mask, **past}),
            second,
        )

        # merged: first step with empty pasts (as transformers.js feeds it), then the cache branch
        heads, hd = cfg.decoder_heads, cfg.d_model // cfg.decoder_heads
        empty = {n: torch.zeros(b, heads, 0, hd) for n in past}
        merged_first = run(
            "decoder_model_merged", {**first_feed, **empty, USE_CACHE_BRANCH: torch.tensor([False])}
        )
        merged_second = run(
            "decoder_model_merged",
            {**first_feed, "inputs_embeds": nxt, **past, USE_CACHE_BRANCH: torch.tensor([True])},
        )
        by_name = {
            "logits": second[0],
            **dict(zip(specs["decoder_with_past_model"].output_names[1:], second[1:])),
            **{n.replace("past_key_values", "present"): t for n, t in past.items() if ".encoder." in n},
        }
        second_all = [by_name[n] for n in specs["decoder_model_merged"].output_names]
        diffs["decoder_model_merged"] = max(
            _max_diff(merged_first, first), _max_diff(merged_second, second_all)
        )
    return diffs
