"""Export a Florence-2 checkpoint to a self-contained ONNX model folder.

Output folder::

    florence2_config.json     runtime config (sizes, token ids, preprocessing, prompt tables)
    generation_config.json    the checkpoint's generation defaults
    tokenizer.json            the tokenizer (tokenizers library format)
    onnx/vision_encoder.onnx  onnx/text_encoder.onnx  onnx/decoder.onnx
    onnx/embed_tokens.npy     token embedding table (prompt embeddings, memory-mapped)
"""

from __future__ import annotations

import json
import shutil
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from florence2_runtime.config import GENERATION_CONFIG_FILE, TOKENIZER_FILE, RuntimeConfig
from florence2_runtime.graphs import EMBEDDINGS_FILE, GraphSpec, native_graphs

from .loading import load_checkpoint
from .modules import Decoder, TextEncoder, VisionEncoder
from .surgery import tie_lm_head

OPSET = 17
ONNX_DIR = "onnx"


@dataclass
class ExportReport:
    """What an export wrote and how each graph compared with PyTorch."""

    folder: Path
    files: dict[str, int] = field(default_factory=dict)  # relative path -> bytes
    max_abs_diff: dict[str, float] = field(default_factory=dict)  # graph -> max |onnx - torch|
    tolerance: float = 0.0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return all(d <= self.tolerance for d in self.max_abs_diff.values())

    def summary(self) -> str:
        lines = [f"exported to {self.folder} in {self.seconds:.1f} s"]
        for name, size in sorted(self.files.items()):
            lines.append(f"  {name:<34} {size / 2**20:9.1f} MiB")
        for name, diff in self.max_abs_diff.items():
            verdict = "ok" if diff <= self.tolerance else "FAILED"
            lines.append(f"  check {name:<20} max |onnx - torch| = {diff:.2e}  (tolerance {self.tolerance:.0e}) {verdict}")
        return "\n".join(lines)


class ExportCheckError(RuntimeError):
    """An exported graph disagrees with PyTorch beyond the tolerance."""


def _log(msg: str, quiet: bool) -> None:
    if not quiet:
        print(msg, file=sys.stderr, flush=True)


def runtime_config_from(model, processor, source: str) -> RuntimeConfig:
    """Collect everything the runtime needs from a loaded model + processor."""
    tc = model.config.text_config
    ip = processor.image_processor
    size = ip.size
    height, width = (size["height"], size["width"]) if "height" in size else (size["shortest_edge"],) * 2
    post = processor.post_processor_config or {}
    banned = post.get("phrase_grounding", {}).get("banned_grounding_tokens", [])
    return RuntimeConfig(
        d_model=tc.d_model,
        vocab_size=model.lm_head.out_features,
        encoder_layers=tc.encoder_layers,
        decoder_layers=tc.decoder_layers,
        encoder_heads=tc.encoder_attention_heads,
        decoder_heads=tc.decoder_attention_heads,
        max_position_embeddings=tc.max_position_embeddings,
        num_image_tokens=processor.num_image_tokens,
        image_token_id=model.config.image_token_id,
        bos_token_id=tc.bos_token_id,
        pad_token_id=tc.pad_token_id,
        eos_token_id=tc.eos_token_id,
        unk_token_id=processor.tokenizer.unk_token_id,
        decoder_start_token_id=tc.decoder_start_token_id,
        image_size=(int(height), int(width)),
        image_mean=tuple(float(x) for x in ip.image_mean),
        image_std=tuple(float(x) for x in ip.image_std),
        rescale_factor=float(ip.rescale_factor),
        resample=int(ip.resample),
        task_prompts_without_inputs=dict(processor.task_prompts_without_inputs),
        task_prompts_with_input=dict(processor.task_prompts_with_input),
        banned_grounding_tokens=tuple(banned),
        source=str(source),
    )


def example_inputs(cfg: RuntimeConfig, specs: dict[str, GraphSpec], batch: int = 2, text: int = 5, past: int = 3):
    """Random inputs for every graph (batch 2 and non-zero past so nothing specialises to 1 or 0)."""
    import torch

    g = torch.Generator().manual_seed(0)
    h, w = cfg.image_size
    d, n_img = cfg.d_model, cfg.num_image_tokens
    enc_len = n_img + text
    mask = torch.ones(batch, enc_len, dtype=torch.int64)
    mask[1, -2:] = 0  # a padded row
    kv = lambda s: torch.randn(batch, cfg.decoder_heads, s, cfg.d_model // cfg.decoder_heads, generator=g)  # noqa: E731
    n_kv = 2 * cfg.decoder_layers
    return {
        "vision_encoder": (torch.randn(batch, 3, h, w, generator=g),),
        "text_encoder": (torch.randn(batch, text, d, generator=g), torch.randn(batch, n_img, d, generator=g), mask),
        "decoder": (
            torch.randint(0, cfg.vocab_size, (batch, 1), generator=g),
            mask,
            *[kv(past) for _ in range(n_kv)],
            *[kv(enc_len) for _ in range(n_kv)],
        ),
    }


def _export_graph(module, args, spec: GraphSpec, path: Path) -> None:
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            args,
            str(path),
            input_names=spec.input_names,
            output_names=spec.output_names,
            dynamic_axes=spec.dynamic_axes(),
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )


def export(
    src: str | Path,
    out: str | Path,
    *,
    tolerance: float = 1e-3,
    check: bool = True,
    overwrite: bool = False,
    quiet: bool = False,
) -> ExportReport:
    """Export checkpoint ``src`` (folder or hub id) to model folder ``out`` and check every graph.

    Raises :class:`ExportCheckError` when a graph differs from PyTorch by more than ``tolerance``.
    """
    import torch

    t0 = time.perf_counter()
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{out}: folder exists and is not empty (pass overwrite=True / --overwrite)")
        shutil.rmtree(out)
    (out / ONNX_DIR).mkdir(parents=True, exist_ok=True)

    _log(f"loading {src} ...", quiet)
    model, processor = load_checkpoint(src)
    model.eval()  # export() restores each wrapper's mode afterwards: keep everything in eval
    cfg = runtime_config_from(model, processor, str(src))
    specs = native_graphs(cfg.dims)
    modules = {"vision_encoder": VisionEncoder(model), "text_encoder": TextEncoder(model), "decoder": Decoder(model)}
    args = example_inputs(cfg, specs)
    report = ExportReport(folder=out, tolerance=tolerance)

    with torch.inference_mode(False), torch.no_grad():
        for i, (name, spec) in enumerate(specs.items(), 1):
            _log(f"[{i}/{len(specs)}] exporting {name} ...", quiet)
            _export_graph(modules[name].eval(), args[name], spec, out / ONNX_DIR / spec.filename)
        tie_lm_head(out / ONNX_DIR / specs["decoder"].filename)

    embeddings = model.model.language_model.shared.weight.detach().float().numpy()
    np.save(out / ONNX_DIR / EMBEDDINGS_FILE, embeddings)
    processor.tokenizer.backend_tokenizer.save(str(out / TOKENIZER_FILE))
    (out / GENERATION_CONFIG_FILE).write_text(
        json.dumps(model.generation_config.to_diff_dict(), indent=1) + "\n", encoding="utf-8"
    )
    cfg.save(out)

    if check:
        from .verify import check_graphs

        _log("checking each graph against PyTorch ...", quiet)
        report.max_abs_diff = check_graphs(model, processor, out, cfg, modules)

    report.files = {str(p.relative_to(out)): p.stat().st_size for p in sorted(out.rglob("*")) if p.is_file()}
    report.seconds = time.perf_counter() - t0
    _log(report.summary(), quiet)
    if not report.ok:
        raise ExportCheckError(report.summary())
    return report
