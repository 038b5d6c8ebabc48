"""int8 recipes, and whether the CPU this runs on computes them right.

Dynamic int8 graphs multiply uint8 activations by quantised weights (``DynamicQuantizeMatMul``,
``MatMulInteger``, ``ConvInteger``). On x86, onnxruntime's kernels (MLAS) multiply uint8 by **int8** with
``vpmaddubsw`` wherever the CPU has no VNNI: each pair of neighbouring products is added into a
*saturating int16*. With full-range weights (|w| <= 127) a pair reaches 2 * 255 * 127 = 64770 and is
clipped to 32767: wrong results, silently (AVX2-only CPUs such as AMD Zen 2/3, many Intel client and
older server chips, AVX-512 CPUs without VNNI such as Skylake-SP). 7-bit weights (|w| <= 64, onnxruntime's
``reduce_range``) reach at most 2 * 255 * 64 = 32640 and never clip. CPUs with VNNI (``avx512_vnni``,
``avx_vnni``; AMX ones have it too) add the products in int32 (``vpdpbusd``); uint8 weights (U8U8) take a
kernel that widens to int16 first; ARM kernels widen too. See :data:`RECIPES`.

:func:`u8s8_saturates` asks onnxruntime itself (a one-node ``MatMulInteger`` on values that clip),
so its answer holds on any OS, under emulators and in VMs; :func:`cpu_flags` reads the VNNI flags the
kernel reports (Linux ``/proc/cpuinfo``, macOS ``sysctl``) to name the cause.
"""

from __future__ import annotations

import functools
import platform
import subprocess
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ModelFileError, require
from . import onnxproto
from .config import CONFIG_FILE


@dataclass(frozen=True)
class Int8Recipe:
    """How weights are quantised, and where the result is right."""

    weight_type: str  # "int8" or "uint8"
    reduce_range: bool  # 7-bit weights (onnxruntime's reduce_range)
    needs_vnni: bool  # wrong on x86 CPUs without VNNI (pairwise int16 saturation)
    description: str


RECIPES = {
    "7bit": Int8Recipe("int8", True, False, "int8 weights in 7 bits (|w| <= 64): right on every CPU"),
    "full-range": Int8Recipe(
        "int8",
        False,
        True,
        "int8 weights in 8 bits: right on ARM and on x86 CPUs with "
        "VNNI/AMX only; wrong (saturated) on x86 CPUs without VNNI",
    ),
    "u8u8": Int8Recipe("uint8", False, False, "uint8 weights: right on every CPU"),
}
DEFAULT_RECIPE = "7bit"
REDUCED_INT8_MAX = 64  # onnxruntime's reduced int8 range is [-64, 64]: 2 * 255 * 64 = 32640 <= 32767
VNNI_FLAGS = (
    "avx512_vnni",
    "avx_vnni",
    "amx_int8",
)  # /proc/cpuinfo names; any one gives MLAS an int32 kernel

# op type -> index of the input holding the quantised weight (uint8 activations times it)
WEIGHT_INPUT = {
    "MatMulInteger": 1,
    "DynamicQuantizeMatMul": 1,
    "MatMulIntegerToFloat": 1,
    "ConvInteger": 1,
    "QLinearMatMul": 3,
    "QLinearConv": 3,
}


def check_recipe(name: str) -> Int8Recipe:
    if name not in RECIPES:
        raise ValueError(f"int8 recipe must be one of {', '.join(RECIPES)}, got {name!r}")
    return RECIPES[name]


# ----------------------------------------------------------------------------- recipes read off the weights


def recipe_of_weights(weights: Iterable[np.ndarray]) -> str | None:
    """The recipe quantised weights were made with: ``full-range`` if an int8 weight is beyond +-64,
    ``7bit`` if all int8 ones are within, ``u8u8`` if all are uint8; None without any."""
    kinds = set()
    for w in weights:
        if w.dtype == np.int8:
            wide = w.size and (int(w.max()) > REDUCED_INT8_MAX or int(w.min()) < -REDUCED_INT8_MAX)
            kinds.add("full-range" if wide else "7bit")
        elif w.dtype == np.uint8:
            kinds.add("u8u8")
    return next((k for k in ("full-range", "7bit", "u8u8") if k in kinds), None)


def quantized_weights(path: str | Path) -> list[np.ndarray]:
    """The constant weights of the integer ops (:data:`WEIGHT_INPUT`) of ONNX file ``path`` (flat arrays)."""
    graph = onnxproto.GraphFile(path)
    names = {
        inputs[WEIGHT_INPUT[op]]
        for op, inputs in graph.nodes
        if op in WEIGHT_INPUT and len(inputs) > WEIGHT_INPUT[op]
    }
    arrays = (graph.array(graph.initializers[n]) for n in sorted(names) if n in graph.initializers)
    return [a for a in arrays if a is not None]


def recipe_of_graphs(paths: Iterable[str | Path]) -> str | None:
    """The int8 recipe read off graph files (the worst one over all); None if none has quantised weights."""
    return recipe_of_weights(w for p in paths for w in quantized_weights(p))


# ----------------------------------------------------------------------------- the CPU


def cpu_flags() -> frozenset[str] | None:
    """The CPU's feature flags as the OS reports them (lower case), or None where they cannot be read."""
    system = platform.system()
    try:
        if system == "Linux":
            for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):  # x86 / ARM
                    return frozenset(value.split())
        elif system == "Darwin":
            out = subprocess.run(
                ["sysctl", "-n", "machdep.cpu.features", "machdep.cpu.leaf7_features"],
                capture_output=True,
                text=True,
                timeout=5,
            ).stdout
            return frozenset(
                f.lower().replace("avx512vnni", "avx512_vnni").replace("avxvnni", "avx_vnni")
                for f in out.split()
            )
    except (OSError, subprocess.SubprocessError):
        return None
    return None


def is_x86() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64", "i386", "i686", "x86")


def cpu_has_vnni(flags: frozenset[str] | None = None) -> bool | None:
    """True / False on x86 from the flags (:func:`cpu_flags` by default); None on other CPUs (the question
    does not arise: ARM's kernels widen) and where the flags cannot be read."""
    if not is_x86():
        return None
    flags = cpu_flags() if flags is None else flags
    return None if flags is None else any(f in flags for f in VNNI_FLAGS)


@functools.lru_cache(maxsize=1)
def u8s8_saturates() -> bool:
    """Whether onnxruntime on this CPU clips uint8 x int8 pair sums to int16 (measured, once per process):
    ``MatMulInteger`` of 255s by 127s, 4 x 64 by 64 x 8, against the exact 64 * 255 * 127."""
    ort = require("onnxruntime", "cpu", "Running Florence-2 models")  # not .providers: it imports .openvino,
    m, k, n = 4, 64, 8  # which imports this module
    model = onnxproto.single_node_model(
        "MatMulInteger",
        [
            onnxproto.value_info("in0", onnxproto.UINT8, (m, k)),
            onnxproto.value_info("in1", onnxproto.INT8, (k, n)),
        ],
        [onnxproto.value_info("out0", onnxproto.INT32, (m, n))],
    )
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(model, sess_options=so, providers=["CPUExecutionProvider"])
    a, b = np.full((m, k), 255, np.uint8), np.full((k, n), 127, np.int8)
    return not np.array_equal(
        sess.run(None, {"in0": a, "in1": b})[0], a.astype(np.int32) @ b.astype(np.int32)
    )


def cpu_description() -> str:
    """E.g. ``x86_64 without VNNI (no avx512_vnni / avx_vnni flag)``: what the warnings name."""
    vnni = cpu_has_vnni()
    detail = (
        {
            True: "with a VNNI flag",
            False: f"without VNNI (no {' / '.join(VNNI_FLAGS[:2])} flag)",
            None: "(VNNI flags unreadable)",
        }[vnni]
        if is_x86()
        else ""
    )
    return f"{platform.machine() or 'unknown CPU'} {detail}".strip()


# ----------------------------------------------------------------------------- the check when loading

_warned: set[str] = set()


class Int8CpuWarning(RuntimeWarning):
    """An int8 model folder computes wrong results on this CPU."""


def int8_problem(recipe: str | None) -> str | None:
    """Why ``recipe`` is wrong on this CPU, or None when it is right (or unknown: nothing to say)."""
    if recipe is None or not RECIPES[recipe].needs_vnni or not u8s8_saturates():
        return None
    return (
        f"int8 weights are full-range ('{recipe}' recipe) and on this CPU onnxruntime adds uint8 x int8 "
        f"products in saturating int16 pairs (measured; {cpu_description()}): RESULTS WILL BE WRONG. "
        f"Use a folder exported with the default '{DEFAULT_RECIPE}' recipe "
        f"(florence2 export --dtype int8), or the fp32 one"
    )


def warn_if_wrong_here(folder: str | Path, recorded: str, graphs: Iterable[str | Path]) -> str | None:
    """Warn once per folder when its int8 graphs compute garbage on this CPU; returns the recipe.

    recorded: the recipe ``florence2_config.json`` names ("" when it names none: folders exported before the
    record, onnx-community ``_quantized`` / ``_int8`` files); then it is read off ``graphs``, and only on a
    CPU where the answer matters (reading weights costs a pass over the files).
    """
    recipe: str | None
    if recorded:
        if recorded not in RECIPES:
            raise ModelFileError(
                Path(folder) / CONFIG_FILE,
                f"unknown int8_recipe {recorded!r} (this runtime knows {', '.join(RECIPES)})",
            )
        recipe = recorded
    elif not u8s8_saturates():
        return None
    else:
        recipe = recipe_of_graphs(graphs)
    problem = int8_problem(recipe)
    key = str(Path(folder).resolve())
    if problem and key not in _warned:
        _warned.add(key)
        warnings.warn(f"{folder}: {problem}", Int8CpuWarning, stacklevel=3)
    return recipe


INT8_SUFFIXES = ("_quantized", "_int8", "_uint8")  # onnx-community file names of 8-bit variants


def check_model_files(folder: str | Path, cfg, files: Iterable[str | Path]) -> str | None:
    """The load-time check of :class:`~florence2_runtime.Florence2`: warns (once) when the int8 graphs among
    ``files`` compute wrong results on this CPU. cfg: the folder's :class:`~florence2_runtime.engine.config.RuntimeConfig`
    (an int8 folder's record of its recipe); onnx-community 8-bit files are recognised by their suffix."""
    paths = [Path(f) for f in files]
    quantized = [f for f in paths if f.stem.endswith(INT8_SUFFIXES)]
    if cfg.precision != "int8" and not quantized:
        return None
    recorded = cfg.int8_recipe if cfg.precision == "int8" else ""
    return warn_if_wrong_here(folder, recorded, quantized or paths)
