"""Static (QDQ) int8 for the vision encoder against the dynamic recipe: speed on base, agreement on the toy.

    python benchmarks/int8_static.py --speed            # base: vision encoder times, 1 thread, CPU seconds
    python benchmarks/precision_tiny.py --variants int8,int8-static-vision   # agreement (uses this module)

The vision encoder is 72 % of an int8 ``<OD>`` call, so it is where a faster int8 recipe would pay. Static
quantisation (``onnxruntime.quantization.quantize_static``, QDQ format) fixes each activation's scale from
calibration images instead of measuring it on every call: per-channel int8 weights, uint8 activations,
the MatMuls with a constant weight only, DaViT's channel-attention q/k/v and the image projection kept
float (as the dynamic recipe keeps the first; OpenVINO cannot compile the projection's QDQ form).
:func:`static_vision_folder` writes a copy of a dynamic int8 folder whose vision encoder is the static
one. Calibration images: generated pictures (:func:`florence2_runtime.cli.bench.generated_image`) or, for
the toy, shapes scenes from their own seed.

``--speed`` times on the cached base exports of ``benchmarks/cpu.py`` (``benchmarks/.cache/base``), each
variant alternating, as CPU seconds of one thread (what a shared machine can still measure): onnxruntime
fp32 / dynamic int8 / static int8, OpenVINO bf16 / static int8.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
BASE = HERE / ".cache" / "base"
# nodes kept float: channel attention's q/k/v (as the dynamic recipe), the image projection (OpenVINO's
# int8 transformation fails on its QDQ form after the Concat)
EXCLUDE = ("channel_attn/q/", "channel_attn/k/", "channel_attn/v/", "image_projection")


def calibration_pixels(folder: Path, images: Sequence) -> list[np.ndarray]:
    """pixel_values [1, 3, H, W] of each image, preprocessed as the model in ``folder`` does."""
    from florence2_runtime.engine.config import RuntimeConfig
    from florence2_runtime.inputs.images import preprocess

    cfg = RuntimeConfig.load(folder)
    return [
        preprocess(
            [im],
            size=cfg.image_size,
            mean=cfg.image_mean,
            std=cfg.image_std,
            resample=cfg.resample,
            rescale_factor=cfg.rescale_factor,
        )
        for im in images
    ]


def quantize_vision_static(src: Path, dst: Path, pixels: list[np.ndarray]) -> None:
    """Write the static QDQ int8 version of vision encoder ``src`` (fp32) to ``dst`` (single file + data)."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.feeds = iter([{"pixel_values": p} for p in pixels])

        def get_next(self):
            return next(self.feeds, None)

    model = onnx.load(str(src))
    excluded = [n.name for n in model.graph.node if any(part in n.name for part in EXCLUDE)]
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # a generic "consider pre-processing" warning per call
    try:
        quantize_static(
            model,
            str(dst),
            Reader(),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=["MatMul"],
            per_channel=True,
            reduce_range=True,  # 7-bit weights: right on x86 CPUs without VNNI too (int8cpu.RECIPES)
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=excluded,
            use_external_data_format=True,
            # bounded memory: at most 3 images' activations at once (a count that divides the number of
            # images leaves onnxruntime 1.2x's calibrator with nothing to merge at the end: keep it 3)
            extra_options={"MatMulConstBOnly": True, "CalibMaxIntermediateOutputs": 3},
        )
    finally:
        root.setLevel(level)


def static_vision_folder(fp32: Path, int8: Path, out: Path, images: Sequence) -> Path:
    """A copy of the dynamic int8 folder ``int8`` whose vision encoder is ``fp32``'s, quantised statically
    with ``images`` as calibration (their number must not be a multiple of 3, see above)."""
    from florence2_export.graphs import onnxfile

    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(int8, out)
    target = out / "onnx" / "vision_encoder.onnx"
    for part in (target, onnxfile.data_file(target)):
        part.unlink(missing_ok=True)
    single = out / "onnx" / "static-vision.onnx"
    quantize_vision_static(fp32 / "onnx" / "vision_encoder.onnx", single, calibration_pixels(fp32, images))
    import onnx

    onnx.save(onnx.load(str(single)), str(target))  # one file, then split as every graph of a folder
    for leftover in single.parent.glob("static-vision.onnx*"):
        leftover.unlink()
    onnxfile.split(target)
    return out


# ----------------------------------------------------------------------------- speed on base


def speed(threads: int, rounds: int, calibration: int) -> dict[str, float]:
    """Best CPU seconds of one vision-encoder run per variant on base (generated 640x480 image)."""
    import onnxruntime as ort

    from florence2_runtime.cli.bench import generated_image
    from florence2_runtime.engine.openvino import OpenVINOSession

    static = BASE / "int8-static-vision"
    if not (static / "onnx" / "vision_encoder.onnx").is_file():
        images = [generated_image(640, 480, seed=1000 + i) for i in range(calibration)]
        static_vision_folder(BASE / "fp32", BASE / "int8", static, images)
    pixels = calibration_pixels(BASE / "fp32", [generated_image(640, 480, seed=0)])[0]

    def ort_session(folder: Path):
        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
        path = str(folder / "onnx" / "vision_encoder.onnx")
        return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])

    def ov_session(folder: Path, precision: str):
        return OpenVINOSession(folder / "onnx" / "vision_encoder.onnx", {"precision": precision}, threads)

    sessions = {
        "onnxruntime fp32": ort_session(BASE / "fp32"),
        "onnxruntime int8 dynamic": ort_session(BASE / "int8"),
        "onnxruntime int8 static": ort_session(static),
        "OpenVINO bf16": ov_session(BASE / "fp32", "bf16"),
        "OpenVINO int8 static (bf16 elsewhere)": ov_session(static, "bf16"),
    }
    best = dict.fromkeys(sessions, float("inf"))
    for _ in range(rounds + 1):  # the first round warms up
        for name, session in sessions.items():
            t = time.process_time()
            session.run(None, {"pixel_values": pixels})
            best[name] = min(best[name], time.process_time() - t)
    return best


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--speed", action="store_true", help="time the vision encoder variants on base")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--calibration", type=int, default=8, help="calibration images (not a multiple of 3)")
    args = p.parse_args(argv)
    if not args.speed:
        p.print_help()
        return 0
    for name, seconds in speed(args.threads, args.rounds, args.calibration).items():
        print(f"{name:40s} {seconds:.3f} CPU s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
