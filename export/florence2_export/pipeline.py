"""Export a Florence-2 checkpoint to a self-contained ONNX model folder: the steps, in order.

:func:`export` loads the checkpoint (:mod:`.checkpoints`), merges PEFT adapters into it, hands the model to
the exporter of the chosen layout (:data:`LAYOUT_EXPORTERS`, :mod:`.layouts`), which writes and checks the
graphs against PyTorch, converts a native folder to an fp16/int8 variant (:mod:`.precision`) and checks that
again (:mod:`.verify`). Everything is written into a temporary folder beside the output and moved into place
only when every check passed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .checkpoints.adapters import base_of, merge_adapters, resolve_adapter
from .checkpoints.loading import load_checkpoint
from .checkpoints.runtime_config import runtime_config_from
from .layouts.native import export_native, native_modules
from .layouts.onnx_community import export_community
from .precision import VARIANT_TOLERANCE, apply_precision, check_dtype
from .progress import log
from .verify import graph_errors, variant_problems

# layout name -> exporter (model, processor, cfg, out, *, check, quiet) -> max |onnx - torch| per graph
LAYOUT_EXPORTERS = {"native": export_native, "onnx-community": export_community}
LAYOUTS = tuple(LAYOUT_EXPORTERS)


@dataclass
class ExportReport:
    """What an export wrote and how each graph compared with PyTorch."""

    folder: Path
    files: dict[str, int] = field(default_factory=dict)  # relative path -> bytes
    max_abs_diff: dict[str, float] = field(default_factory=dict)  # graph -> max |onnx - torch|
    tolerance: float = 0.0
    seconds: float = 0.0
    dtype: str = (
        "fp32"  # precision variant (precision.py); its graphs are checked once more, after conversion
    )
    variant_errors: dict[str, tuple[float, float]] = field(
        default_factory=dict
    )  # graph -> (max |diff|, max |torch|)
    variant_tolerance: float = 0.0  # max relative error max |variant - torch| / max |torch| allowed per graph
    adapters: list[dict] = field(default_factory=list)  # PEFT adapters merged before export (Adapter.record)
    variant_problems: list[str] = field(
        default_factory=list
    )  # what else fails the variant (int8: verify.variant_problems)

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
        out = [
            f"{name} max |onnx - torch| = {diff:.2e} > {self.tolerance:.0e}"
            for name, diff in self.max_abs_diff.items()
            if not diff <= self.tolerance
        ]
        out += [
            f"{self.dtype} {name} max |{self.dtype} - torch| = {self._share(e)} max |torch| > "
            f"{self.variant_tolerance:.0%}"
            for name, e in self.variant_errors.items()
            if not self._relative(e) <= self.variant_tolerance
        ]
        return out + [f"{self.dtype}: {problem}" for problem in self.variant_problems]

    def _share(self, error: tuple[float, float]) -> str:
        rel = self._relative(error)
        return f"{rel:.1%} of" if rel < float("inf") else "inf or NaN (overflow) vs"

    def summary(self) -> str:
        head = (
            f"exported to {self.folder} in {self.seconds:.1f} s"
            if self.ok
            else f"export to {self.folder} FAILED its check after {self.seconds:.1f} s; nothing was written there"
        )
        lines = [head]
        for a in self.adapters:
            lines.append(
                f"  merged {a['peft_type']} adapter {a['name']} ({a['weights']} sha256 {a['sha256'][:16]})"
            )
        for name, size in sorted(self.files.items()):
            lines.append(f"  {name:<34} {size / 2**20:9.1f} MiB")
        for name, diff in self.max_abs_diff.items():
            verdict = "ok" if diff <= self.tolerance else "FAILED"
            lines.append(
                f"  check {name:<20} max |onnx - torch| = {diff:.2e}  (tolerance {self.tolerance:.0e}) {verdict}"
            )
        for name, (diff, ref) in self.variant_errors.items():
            rel = self._relative((diff, ref))
            verdict = "ok" if rel <= self.variant_tolerance else "FAILED"
            share = self._share((diff, ref))
            lines.append(
                f"  check {self.dtype} {name:<15} max |{self.dtype} - torch| = {diff:.2e} = {share} max "
                f"|torch| {ref:.2e}  (tolerance {self.variant_tolerance:.0%}) {verdict}"
            )
        lines += [f"  check {self.dtype} FAILED: {problem}" for problem in self.variant_problems]
        return "\n".join(lines)


class ExportCheckError(RuntimeError):
    """An exported graph disagrees with PyTorch beyond the tolerance; ``report`` says by how much.

    The message is one line; the output folder was not written (the export ran in a temporary folder)."""

    def __init__(self, report: ExportReport):
        self.report = report
        super().__init__(
            f"the export failed its check ({'; '.join(report.failures())}); nothing was written to "
            f"{report.folder}"
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

    adapter: one or several PEFT adapters (folders or hub ids, :mod:`.checkpoints.adapters`) merged into the
    model in order, in float32, before export; the graphs are checked against the merged model. ``src`` None: the
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
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    check_dtype(dtype)
    adapters = _resolve_adapters(adapter)
    if src is None:
        if not adapters:
            raise ValueError("no checkpoint given (src is None and no adapter names a base model)")
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
        report = _export_into(
            work,
            out,
            src,
            tolerance=tolerance,
            check=check,
            quiet=quiet,
            layout=layout,
            dtype=dtype,
            variant_tolerance=variant_tolerance,
            precision_options=precision_options,
            adapters=adapters,
            t0=t0,
        )
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


def _export_into(
    work: Path,
    out: Path,
    src,
    *,
    tolerance,
    check,
    quiet,
    layout,
    dtype,
    variant_tolerance,
    precision_options,
    adapters: list,
    t0: float,
) -> ExportReport:
    """The export proper, written into ``work``; the report names ``out``, where it will end up."""
    log(f"loading {src} ...", quiet)
    model, processor = load_checkpoint(src)
    model.eval()  # export() restores each wrapper's mode afterwards: keep everything in eval
    cfg = runtime_config_from(model, processor, str(src))
    records = []
    if adapters:
        log(f"merging {len(adapters)} adapter(s) with peft (float32) ...", quiet)
        model = merge_adapters(model, adapters, cfg.image_size, cfg.num_image_tokens)
        records = [a.record() for a in adapters]
        cfg = dataclasses.replace(cfg, adapters=tuple(records))
    report = ExportReport(folder=out, tolerance=tolerance, adapters=records)
    report.max_abs_diff = LAYOUT_EXPORTERS[layout](model, processor, cfg, work, check=check, quiet=quiet)
    if (
        layout == "onnx-community" and records
    ):  # this layout has no florence2_config.json: recorded in config.json
        config = json.loads((work / "config.json").read_text(encoding="utf-8"))
        config["florence2_onnx_adapters"] = records
        (work / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    if dtype != "fp32":
        log(f"converting the graphs to {dtype} ...", quiet)
        apply_precision(work, dtype, precision_options)
        report.dtype = dtype
        report.variant_tolerance = (
            VARIANT_TOLERANCE[dtype] if variant_tolerance is None else variant_tolerance
        )
        if check:
            log(f"checking each {dtype} graph against PyTorch ...", quiet)
            report.variant_errors = graph_errors(model, processor, work, cfg, native_modules(model))
            report.variant_problems = variant_problems(work)
    return _finish(report, work, t0, quiet)


def _resolve_adapters(adapter) -> list:
    """The adapters given to :func:`export` (none, one, or a sequence), resolved to local folders."""
    if adapter is None:
        return []
    specs = [adapter] if isinstance(adapter, (str, Path)) else list(adapter)
    if not specs:
        return []
    return [resolve_adapter(s) for s in specs]


def _finish(report: ExportReport, work: Path, t0: float, quiet: bool) -> ExportReport:
    report.files = {
        str(p.relative_to(work)): p.stat().st_size for p in sorted(work.rglob("*")) if p.is_file()
    }
    report.seconds = time.perf_counter() - t0
    log(report.summary(), quiet)
    if not report.ok:
        raise ExportCheckError(report)
    return report
