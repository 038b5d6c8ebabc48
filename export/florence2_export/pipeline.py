"""Export a Florence-2 checkpoint to a self-contained ONNX model folder.

Output folder::

    florence2_config.json     runtime config (sizes, token ids, preprocessing, prompt tables)
    generation_config.json    the checkpoint's generation defaults
    tokenizer.json            the tokenizer (tokenizers library format)
    onnx/vision_encoder.onnx  onnx/text_encoder.onnx  onnx/decoder.onnx   (each with its weights in NAME.onnx_data)
    onnx/embed_tokens.npy     token embedding table (prompt and decoder-step lookups, memory-mapped)
    onnx/kv_gather.onnx       row gathers over K/V tensors (beam search on the device, IO binding)
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from florence2_runtime.config import GENERATION_CONFIG_FILE, TOKENIZER_FILE, RuntimeConfig
from florence2_runtime.graphs import EMBEDDINGS_FILE, GraphSpec, native_graphs

from . import onnxfile
from .gather import write_kv_gather
from .checkpoints.loading import load_checkpoint
from .modules import Decoder, TextEncoder, VisionEncoder
from .vision import DaViTEncoder

OPSET = 17
ONNX_DIR = "onnx"
LAYOUTS = ("native", "onnx-community")


@dataclass
class ExportReport:
    """What an export wrote and how each graph compared with PyTorch."""

    folder: Path
    files: dict[str, int] = field(default_factory=dict)  # relative path -> bytes
    max_abs_diff: dict[str, float] = field(default_factory=dict)  # graph -> max |onnx - torch|
    tolerance: float = 0.0
    seconds: float = 0.0
    dtype: str = "fp32"  # precision variant (precision.py); its graphs are checked once more, after conversion
    variant_errors: dict[str, tuple[float, float]] = field(default_factory=dict)  # graph -> (max |diff|, max |torch|)
    variant_tolerance: float = 0.0  # max relative error max |variant - torch| / max |torch| allowed per graph
    adapters: list[dict] = field(default_factory=list)  # PEFT adapters merged before export (adapters.Adapter.record)
    variant_problems: list[str] = field(default_factory=list)  # what else fails the variant (int8: verify.variant_problems)

    @property
    def ok(self) -> bool:
        fp32_ok = all(d <= self.tolerance for d in self.max_abs_diff.values())
        variant_ok = all(self._relative(e) <= self.variant_tolerance for e in self.variant_errors.values())
        return fp32_ok and variant_ok and not self.variant_problems

    @staticmethod
    def _relative(error: tuple[float, float]) -> float:
        diff, ref = error
        return diff / ref if ref > 0 else diff

    def failures(self) -> list[str]:
        """One short line per graph over its tolerance (empty when the export is ok)."""
        out = [f"{name} max |onnx - torch| = {diff:.2e} > {self.tolerance:.0e}"
               for name, diff in self.max_abs_diff.items() if not diff <= self.tolerance]
        out += [f"{self.dtype} {name} max |{self.dtype} - torch| = {self._share(e)} max |torch| > "
                f"{self.variant_tolerance:.0%}"
                for name, e in self.variant_errors.items() if not self._relative(e) <= self.variant_tolerance]
        return out + [f"{self.dtype}: {problem}" for problem in self.variant_problems]

    def _share(self, error: tuple[float, float]) -> str:
        rel = self._relative(error)
        return f"{rel:.1%} of" if rel < float("inf") else "inf or NaN (overflow) vs"

    def summary(self) -> str:
        head = (f"exported to {self.folder} in {self.seconds:.1f} s" if self.ok else
                f"export to {self.folder} FAILED its check after {self.seconds:.1f} s; nothing was written there")
        lines = [head]
        for a in self.adapters:
            lines.append(f"  merged {a['peft_type']} adapter {a['name']} ({a['weights']} sha256 {a['sha256'][:16]})")
        for name, size in sorted(self.files.items()):
            lines.append(f"  {name:<34} {size / 2**20:9.1f} MiB")
        for name, diff in self.max_abs_diff.items():
            verdict = "ok" if diff <= self.tolerance else "FAILED"
            lines.append(f"  check {name:<20} max |onnx - torch| = {diff:.2e}  (tolerance {self.tolerance:.0e}) {verdict}")
        for name, (diff, ref) in self.variant_errors.items():
            rel = self._relative((diff, ref))
            verdict = "ok" if rel <= self.variant_tolerance else "FAILED"
            share = self._share((diff, ref))
            lines.append(f"  check {self.dtype} {name:<15} max |{self.dtype} - torch| = {diff:.2e} = {share} max "
                         f"|torch| {ref:.2e}  (tolerance {self.variant_tolerance:.0%}) {verdict}")
        lines += [f"  check {self.dtype} FAILED: {problem}" for problem in self.variant_problems]
        return "\n".join(lines)


class ExportCheckError(RuntimeError):
    """An exported graph disagrees with PyTorch beyond the tolerance; ``report`` says by how much.

    The message is one line; the output folder was not written (the export ran in a temporary folder)."""

    def __init__(self, report: "ExportReport"):
        self.report = report
        super().__init__(f"the export failed its check ({'; '.join(report.failures())}); nothing was written to "
                         f"{report.folder}")


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
        shared_cross_kv=True,
        decoder_inputs_embeds=True,
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
            torch.randn(batch, 1, d, generator=g),
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
    src: str | Path | None,
    out: str | Path,
    *,
    tolerance: float = 1e-3,
    check: bool = True,
    overwrite: bool = False,
    quiet: bool = False,
    layout: str = "native",
    dtype: str = "fp32",
    variant_tolerance: float | None = None,
    precision_options=None,
    adapter: str | Path | Sequence[str | Path] | None = None,
) -> ExportReport:
    """Export checkpoint ``src`` (folder or hub id) to model folder ``out`` and check every graph.

    adapter: one or several PEFT adapters (folders or hub ids, :mod:`.adapters`) merged into the model in
    order, in float32, before export; the graphs are checked against the merged model. ``src`` None: the
    first adapter's ``base_model_name_or_path``.

    layout: "native" (this project's folder) or "onnx-community" (the layout transformers.js reads).

    dtype: "fp32", "fp16" or "int8" (:mod:`.precision`). The fp32 graphs are checked against PyTorch with
    ``tolerance`` first; an fp16/int8 variant is then checked again, its max |diff| relative to max |torch| per
    graph against ``variant_tolerance`` (default :data:`.precision.VARIANT_TOLERANCE` of the dtype).
    precision_options: :class:`.precision.Int8Options` / :class:`.precision.Fp16Options` (None: defaults).

    Raises :class:`ExportCheckError` when a graph differs from PyTorch by more than ``tolerance``.

    Everything is written into a temporary folder beside ``out`` and moved into place only when the export
    and its checks succeed: a failed or interrupted export leaves ``out`` as it was (an old folder replaced
    with ``overwrite`` is removed only then).
    """
    from .precision import check_dtype

    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    check_dtype(dtype)
    adapters = _resolve_adapters(adapter)
    if src is None:
        if not adapters:
            raise ValueError("no checkpoint given (src is None and no adapter names a base model)")
        from .checkpoints.adapters import base_of

        src = base_of(adapters[0])
    if dtype != "fp32" and layout != "native":
        raise ValueError(f"dtype {dtype!r} is only available with the native layout")
    t0 = time.perf_counter()
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out}: exists and is not a folder")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out}: folder exists and is not empty (pass overwrite=True / --overwrite)")
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    work.chmod(0o777 & ~_umask())  # mkdtemp's 0700 would stick to the finished folder
    try:
        report = _export_into(work, out, src, tolerance=tolerance, check=check, quiet=quiet, layout=layout,
                              dtype=dtype, variant_tolerance=variant_tolerance, precision_options=precision_options,
                              adapters=adapters, t0=t0)
        _move_into_place(work, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return report


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _move_into_place(work: Path, out: Path) -> None:
    """Rename the finished ``work`` folder to ``out``; an existing ``out`` is set aside first, removed after."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}-{time.monotonic_ns()}")
        out.rename(old)
    try:
        work.rename(out)
    except OSError:
        if old is not None:
            old.rename(out)  # put the user's folder back
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _export_into(work: Path, out: Path, src, *, tolerance, check, quiet, layout, dtype, variant_tolerance,
                 precision_options, adapters: list, t0: float) -> ExportReport:
    """The export proper, written into ``work``; the report names ``out``, where it will end up."""
    import torch

    from .precision import VARIANT_TOLERANCE

    (work / ONNX_DIR).mkdir(parents=True, exist_ok=True)
    _log(f"loading {src} ...", quiet)
    model, processor = load_checkpoint(src)
    model.eval()  # export() restores each wrapper's mode afterwards: keep everything in eval
    cfg = runtime_config_from(model, processor, str(src))
    records = []
    if adapters:
        from .checkpoints.adapters import merge_adapters

        _log(f"merging {len(adapters)} adapter(s) with peft (float32) ...", quiet)
        model = merge_adapters(model, adapters, cfg.image_size, cfg.num_image_tokens)
        records = [a.record() for a in adapters]
        cfg = dataclasses.replace(cfg, adapters=tuple(records))
    if layout == "onnx-community":
        from .community import export_community

        report = ExportReport(folder=out, tolerance=tolerance, adapters=records)
        report.max_abs_diff = export_community(model, processor, cfg, work, check=check, quiet=quiet)
        if records:  # this layout has no florence2_config.json: recorded in config.json
            config = json.loads((work / "config.json").read_text(encoding="utf-8"))
            config["florence2_onnx_adapters"] = records
            (work / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        return _finish(report, work, t0, quiet)
    specs = native_graphs(cfg.dims)
    # the torch computation each graph is checked against: transformers' own for the vision encoder ...
    modules = {"vision_encoder": VisionEncoder(model), "text_encoder": TextEncoder(model), "decoder": Decoder(model)}
    # ... which is exported as the same function written for onnxruntime's kernels
    exported = {**modules, "vision_encoder": DaViTEncoder(model, cfg.image_size)}
    args = example_inputs(cfg, specs)
    report = ExportReport(folder=out, tolerance=tolerance, adapters=records)

    with torch.inference_mode(False), torch.no_grad():
        for i, (name, spec) in enumerate(specs.items(), 1):
            _log(f"[{i}/{len(specs)}] exporting {name} ...", quiet)
            _export_graph(exported[name].eval(), args[name], spec, work / ONNX_DIR / spec.filename)
            onnxfile.split(work / ONNX_DIR / spec.filename)  # weights in NAME.onnx_data: loads without a 2x spike
    write_kv_gather(work / ONNX_DIR, cfg.dims)  # device-side beam bookkeeping for the IO-binding path

    shared = model.model.language_model.shared  # the lookup transformers does: rows times embed_scale (1 here)
    embeddings = (shared.weight * getattr(shared, "embed_scale", 1.0)).detach().float().numpy()
    np.save(work / ONNX_DIR / EMBEDDINGS_FILE, embeddings)
    processor.tokenizer.backend_tokenizer.save(str(work / TOKENIZER_FILE))
    (work / GENERATION_CONFIG_FILE).write_text(
        json.dumps(model.generation_config.to_diff_dict(), indent=1) + "\n", encoding="utf-8"
    )
    cfg.save(work)

    if check:
        from .verify import check_graphs

        _log("checking each graph against PyTorch ...", quiet)
        report.max_abs_diff = check_graphs(model, processor, work, cfg, modules)
    if dtype != "fp32":
        from .precision import apply_precision
        from .verify import graph_errors, variant_problems

        _log(f"converting the graphs to {dtype} ...", quiet)
        apply_precision(work, dtype, precision_options)
        report.dtype = dtype
        report.variant_tolerance = VARIANT_TOLERANCE[dtype] if variant_tolerance is None else variant_tolerance
        if check:
            _log(f"checking each {dtype} graph against PyTorch ...", quiet)
            report.variant_errors = graph_errors(model, processor, work, cfg, modules)
            report.variant_problems = variant_problems(work)
    return _finish(report, work, t0, quiet)


def _resolve_adapters(adapter) -> list:
    """The adapters given to :func:`export` (none, one, or a sequence), resolved to local folders."""
    if adapter is None:
        return []
    specs = [adapter] if isinstance(adapter, (str, Path)) else list(adapter)
    if not specs:
        return []
    from .checkpoints.adapters import resolve_adapter

    return [resolve_adapter(s) for s in specs]


def _finish(report: ExportReport, work: Path, t0: float, quiet: bool) -> ExportReport:
    report.files = {str(p.relative_to(work)): p.stat().st_size for p in sorted(work.rglob("*")) if p.is_file()}
    report.seconds = time.perf_counter() - t0
    _log(report.summary(), quiet)
    if not report.ok:
        raise ExportCheckError(report)
    return report
