"""Check exported graphs against the PyTorch modules they came from, on real inputs.

The inputs are images of :func:`make_test_image` (deterministic, colourful, any size) through the
checkpoint's own processor; the tests and the demo draw their images with it too.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from florence2_runtime.engine.config import RuntimeConfig
from florence2_runtime.engine.graphs import native_graphs
from florence2_runtime.engine.int8cpu import RECIPES, cpu_description, recipe_of_graphs, u8s8_saturates


def make_test_image(width: int, height: int, seed: int = 0) -> Image.Image:
    """A colourful deterministic RGB image: smooth gradients, a few solid shapes and some noise."""
    if width < 1 or height < 1:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    u, v = x / max(width - 1, 1), y / max(height - 1, 1)
    phase = rng.uniform(0, 2 * np.pi, size=3)
    freq = rng.uniform(1.0, 4.0, size=3)
    img = np.stack(
        [
            0.5 + 0.5 * np.sin(2 * np.pi * f * (u * c + v * (1 - c)) + p)
            for f, p, c in zip(freq, phase, rng.uniform(0, 1, size=3))
        ],
        axis=-1,
    )
    for _ in range(int(rng.integers(2, 5))):  # solid rectangles and discs
        cx, cy, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.08, 0.3)
        colour = rng.uniform(0, 1, size=3)
        inside = (
            ((u - cx) ** 2 + (v - cy) ** 2 < r * r)
            if rng.random() < 0.5
            else (np.abs(u - cx) < r) & (np.abs(v - cy) < r * 0.6)
        )
        img[inside] = colour
    img += rng.normal(0, 0.03, size=img.shape)
    return Image.fromarray(np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8), mode="RGB")


def _errors(onnx_out, torch_out) -> tuple[float, float]:
    """(max |onnx - torch|, max |torch|) over paired outputs; the difference is inf if onnx gave inf or NaN."""
    diff = ref = 0.0
    for x, y in zip(onnx_out, torch_out):
        x, y = np.asarray(x, np.float64), y.detach().double().numpy()
        if x.size:
            d = np.abs(x - y)
            diff = max(diff, float(np.max(d)) if np.isfinite(d).all() else float("inf"))
            ref = max(ref, float(np.max(np.abs(y))))
    return diff, ref


def check_graphs(model, processor, folder: Path, cfg: RuntimeConfig, modules: dict) -> dict[str, float]:
    """Run each ONNX graph and its torch module on the same real inputs; return max |diff| per graph."""
    return {name: diff for name, (diff, _) in graph_errors(model, processor, folder, cfg, modules).items()}


def graph_errors(
    model, processor, folder: Path, cfg: RuntimeConfig, modules: dict
) -> dict[str, tuple[float, float]]:
    """Run each ONNX graph and its torch module on the same real inputs; per graph (max |diff|, max |torch|).

    Inputs: two generated images of different sizes through the checkpoint's own processor, two prompts of
    different lengths (so one row is padded), and two decoder steps (empty past, then the returned past).
    """
    import onnxruntime as ort
    import torch

    specs = native_graphs(cfg.dims)
    sess = {
        name: ort.InferenceSession(
            str(Path(folder) / "onnx" / spec.filename), providers=["CPUExecutionProvider"]
        )
        for name, spec in specs.items()
    }
    images = [make_test_image(64, 48, seed=1), make_test_image(33, 70, seed=2)]
    batch = processor(
        text=["<OD>", "<CAPTION_TO_PHRASE_GROUNDING>a red ball on a table"],
        images=images,
        return_tensors="pt",
        padding=True,
    )
    n_img = cfg.num_image_tokens
    text_ids = batch["input_ids"][:, n_img:]
    mask = batch["attention_mask"]
    diffs: dict[str, tuple[float, float]] = {}

    with torch.no_grad():
        pixel_values = batch["pixel_values"].float()
        feats_t = modules["vision_encoder"](pixel_values)
        feats_o = sess["vision_encoder"].run(None, {"pixel_values": pixel_values.numpy()})
        diffs["vision_encoder"] = _errors(feats_o, [feats_t])

        embeds = model.model.language_model.shared(text_ids)
        cross_t = modules["text_encoder"](embeds, feats_t, mask)
        cross_o = sess["text_encoder"].run(
            None,
            {
                "inputs_embeds": embeds.numpy(),
                "image_features": feats_t.numpy(),
                "attention_mask": mask.numpy(),
            },
        )
        diffs["text_encoder"] = _errors(cross_o, cross_t)

        b = text_ids.shape[0]
        empty = torch.zeros(b, cfg.decoder_heads, 0, cfg.d_model // cfg.decoder_heads)
        past_t = [empty] * (2 * cfg.decoder_layers)
        worst = (0.0, 0.0)
        lookup = (
            model.model.language_model.decoder.embed_tokens
        )  # what the runtime reads from embed_tokens.npy
        for token in (cfg.decoder_start_token_id, cfg.bos_token_id):
            embeds = lookup(torch.full((b, 1), token, dtype=torch.int64))
            out_t = modules["decoder"](embeds, mask, *past_t, *cross_t)
            feed = {"inputs_embeds": embeds.numpy(), "encoder_attention_mask": mask.numpy()}
            names = specs["decoder"].input_names[2:]
            feed.update({n: t.numpy() for n, t in zip(names, [*past_t, *cross_t])})
            out_o = sess["decoder"].run(None, feed)
            step = _errors(out_o, out_t)
            worst = (max(worst[0], step[0]), max(worst[1], step[1]))
            past_t = list(out_t[1:])
        diffs["decoder"] = worst
    return diffs


def variant_problems(folder: Path) -> list[str]:
    """What fails a precision variant besides its errors against PyTorch; for int8, two things that make the
    check mean the same on every machine:

    - the weights read off the graphs must be those of the recipe ``florence2_config.json`` records (the
      ``7bit`` default: no int8 weight beyond +-64, so no uint8 x int8 pair sum can saturate on any CPU);
    - a recipe that needs VNNI (``full-range``) cannot be checked on a CPU whose onnxruntime saturates: the
      errors measured there are not those of the CPUs the folder is for.
    """
    folder = Path(folder)
    cfg = RuntimeConfig.load(folder)
    if cfg.precision != "int8":
        return []
    files = [folder / "onnx" / spec.filename for spec in native_graphs(cfg.dims).values()]
    found = recipe_of_graphs(files)
    problems = []
    if found != cfg.int8_recipe:
        problems.append(
            f"the graphs hold {found!r} int8 weights, florence2_config.json records {cfg.int8_recipe!r}"
        )
    if cfg.int8_recipe in RECIPES and RECIPES[cfg.int8_recipe].needs_vnni and u8s8_saturates():
        problems.append(
            f"'{cfg.int8_recipe}' int8 cannot be checked on this CPU (measured; {cpu_description()}): "
            "onnxruntime adds its uint8 x int8 products in saturating int16 pairs here, so the folder "
            "computes wrong results here and the errors above are not those of the CPUs it is for "
            "(x86 with VNNI/AMX, ARM). Export it on such a CPU, or use the default '7bit' recipe"
        )
    return problems
