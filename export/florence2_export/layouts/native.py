"""Export to this project's native layout, from the loaded torch model.

Output folder::

    florence2_config.json     runtime config (sizes, token ids, preprocessing, prompt tables)
    generation_config.json    the checkpoint's generation defaults
    tokenizer.json            the tokenizer (tokenizers library format)
    onnx/vision_encoder.onnx  onnx/text_encoder.onnx  onnx/decoder.onnx   (each with its weights in NAME.onnx_data)
    onnx/embed_tokens.npy     token embedding table (prompt and decoder-step lookups, memory-mapped)
    onnx/kv_gather.onnx       row gathers over K/V tensors (beam search on the device, IO binding)

Graph names, tensor names and dynamic axes come from :func:`florence2_runtime.engine.graphs.native_graphs`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from florence2_runtime.engine.config import GENERATION_CONFIG_FILE, TOKENIZER_FILE, RuntimeConfig
from florence2_runtime.engine.graphs import EMBEDDINGS_FILE, ONNX_DIR, GraphSpec, native_graphs

from ..graphs import onnxfile
from ..graphs.gather import write_kv_gather
from ..graphs.modules import Decoder, TextEncoder, VisionEncoder
from ..graphs.to_onnx import export_graph
from ..graphs.vision import DaViTEncoder
from ..progress import log
from ..verify import check_graphs


def native_modules(model) -> dict:
    """The torch computation each graph is checked against: transformers' own (the vision encoder included)."""
    return {
        "vision_encoder": VisionEncoder(model),
        "text_encoder": TextEncoder(model),
        "decoder": Decoder(model),
    }


def example_inputs(
    cfg: RuntimeConfig, specs: dict[str, GraphSpec], batch: int = 2, text: int = 5, past: int = 3
):
    """Random inputs for every graph (batch 2 and non-zero past so nothing specialises to 1 or 0)."""
    import torch

    g = torch.Generator().manual_seed(0)
    h, w = cfg.image_size.height, cfg.image_size.width
    d, n_img = cfg.d_model, cfg.num_image_tokens
    enc_len = n_img + text
    mask = torch.ones(batch, enc_len, dtype=torch.int64)
    mask[1, -2:] = 0  # a padded row
    kv = lambda s: torch.randn(batch, cfg.decoder_heads, s, cfg.d_model // cfg.decoder_heads, generator=g)  # noqa: E731
    n_kv = 2 * cfg.decoder_layers
    return {
        "vision_encoder": (torch.randn(batch, 3, h, w, generator=g),),
        "text_encoder": (
            torch.randn(batch, text, d, generator=g),
            torch.randn(batch, n_img, d, generator=g),
            mask,
        ),
        "decoder": (
            torch.randn(batch, 1, d, generator=g),
            mask,
            *[kv(past) for _ in range(n_kv)],
            *[kv(enc_len) for _ in range(n_kv)],
        ),
    }


def export_native(
    model, processor, cfg: RuntimeConfig, out: Path, *, check: bool = True, quiet: bool = False
) -> dict[str, float]:
    """Write the native layout of ``model`` into ``out``; return max |onnx - torch| per graph (empty unless check)."""
    import torch

    (out / ONNX_DIR).mkdir(parents=True, exist_ok=True)
    specs = native_graphs(cfg.dims)
    modules = native_modules(model)
    # ... the vision encoder is exported as the same function written for onnxruntime's kernels
    exported = {**modules, "vision_encoder": DaViTEncoder(model, cfg.image_size)}
    args = example_inputs(cfg, specs)

    with torch.inference_mode(False), torch.no_grad():
        for i, (name, spec) in enumerate(specs.items(), 1):
            log(f"[{i}/{len(specs)}] exporting {name} ...", quiet)
            export_graph(exported[name].eval(), args[name], spec, out / ONNX_DIR / spec.filename)
            onnxfile.split(
                out / ONNX_DIR / spec.filename
            )  # weights in NAME.onnx_data: loads without a 2x spike
    write_kv_gather(out / ONNX_DIR, cfg.dims)  # device-side beam bookkeeping for the IO-binding path

    shared = (
        model.model.language_model.shared
    )  # the lookup transformers does: rows times embed_scale (1 here)
    embeddings = (shared.weight * getattr(shared, "embed_scale", 1.0)).detach().float().numpy()
    np.save(out / ONNX_DIR / EMBEDDINGS_FILE, embeddings)
    processor.tokenizer.backend_tokenizer.save(str(out / TOKENIZER_FILE))
    (out / GENERATION_CONFIG_FILE).write_text(
        json.dumps(model.generation_config.to_diff_dict(), indent=1) + "\n", encoding="utf-8"
    )
    cfg.save(out)
    if not check:
        return {}
    log("checking each graph against PyTorch ...", quiet)
    return check_graphs(model, processor, out, cfg, modules)
