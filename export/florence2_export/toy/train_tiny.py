"""Train a tiny Florence-2 on generated shapes and words (:mod:`florence2_export.toy.shapes`), offline, on a CPU.

``python -m florence2_export.toy.train_tiny OUT_DIR`` (or ``bash scripts/train_tiny.sh``) builds the tokenizer
(the BPE of :mod:`florence2_export.toy.tiny`, trained on the task prompts and the dataset's words), a
``Florence2ForConditionalGeneration`` of 3.3 M parameters at 128 px, trains it on examples generated on
the fly for all 15 tasks, evaluates it on a held-out generated set (:mod:`florence2_export.toy.tiny_eval`)
and writes a transformers checkpoint folder (safetensors, tokenizer, processor files, model card).

Deterministic for a given seed and thread count: the data come from one ``numpy`` generator, the
weights from ``torch.manual_seed``, and the loop runs in one process.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from florence2_runtime.tasks.prompts import construct_prompt

from . import shapes, tiny, tiny_eval

if TYPE_CHECKING:  # torch and transformers are imported where they are used
    from transformers import Florence2ForConditionalGeneration

IMAGE_SIZE = 128
VISION_CONFIG = {
    **tiny.MODEL_CONFIGS["tiny"]["vision_config"],
    "depths": [1, 1, 2, 1],
    "embed_dim": [16, 32, 96, 192],
    "num_heads": [1, 2, 4, 6],
    "num_groups": [1, 2, 4, 6],
    "projection_dim": 128,
    "drop_path_rate": 0.0,
}
TEXT_CONFIG = {
    **tiny.MODEL_CONFIGS["tiny"]["text_config"],
    "d_model": 128,
    "encoder_layers": 3,
    "decoder_layers": 3,
    "encoder_attention_heads": 4,
    "decoder_attention_heads": 4,
    "encoder_ffn_dim": 512,
    "decoder_ffn_dim": 512,
    "dropout": 0.0,
    "attention_dropout": 0.0,
    "activation_dropout": 0.0,
}
# the published generation defaults, without no_repeat_ngram_size: the toy captions repeat trigrams
# ("... in the top left and a small ... in the top right")
GENERATION_CONFIG = {**tiny.GENERATION_CONFIG, "no_repeat_ngram_size": 0}
MAX_TARGET_TOKENS = 64
CROSS_ATTENTION_QK_SCALE = 4.0


@dataclass(frozen=True)
class TrainOptions:
    """The run's recipe (recorded in the checkpoint folder as ``training_args.json``)."""

    steps: int = 1800
    batch_size: int = 32
    lr: float = 1e-3
    warmup: int = 100
    weight_decay: float = 0.01
    seed: int = 0
    # two threads on an idle 2-core machine (~0.65 s per step on Zen 4, against ~1 s with one); on a busy machine
    # pass --threads 1: two threads then wait on each other (measured once: 3x slower)
    threads: int = 2
    eval_per_task: int = 40
    eval_seed: int = 10_000  # the held-out set's generator (training draws from ``seed``)
    log_every: int = 50
    stop_after: int = 0  # stop after this many steps of the ``steps``-step schedule (0: run it all)
    save_every: int = 200  # a checkpoint of the run so far in OUT.partial/ (0: none)
    init: str = ""  # continue from this checkpoint folder (one of this trainer's) instead of a fresh init
    aux_weight: float = (
        1.0  # weight of the auxiliary per-cell loss on the vision tokens (0: off); see CellHead
    )
    aux_box_weight: float = 5.0  # weight of its box (L1) term relative to its class term


def build_tokenizer():
    """The tiny BPE (``tiny.build_tokenizer``) trained on the prompts and every word of the dataset."""
    return tiny.build_tokenizer(corpus=shapes.corpus(), train_vocab_size=600)


def build_model(tokenizer, seed: int):
    """A freshly initialised Florence-2 (transformers' own class and init) sized for the shapes task.

    The 1000 ``<loc_>`` embeddings (tied to ``lm_head``) start as a smooth function of the bin index
    (random Fourier features), so that neighbouring bins begin close and a near miss costs little. The
    decoder's cross-attention query and key weights start :data:`CROSS_ATTENTION_QK_SCALE` times larger
    than transformers' init, so that cross-attention is not uniform at the start and the decoder has a
    gradient towards reading the image (with the default init it learns the answers' language prior first).
    """
    import torch
    from transformers import Florence2Config, Florence2ForConditionalGeneration, GenerationConfig

    torch.manual_seed(seed)
    grid = tiny.image_grid(IMAGE_SIZE)
    text = dict(
        TEXT_CONFIG,
        vocab_size=tokenizer.get_vocab_size(with_added_tokens=True),
        max_position_embeddings=-(-(grid * grid + 1 + tiny.TINY_TEXT_POSITIONS) // 64) * 64,
    )
    config = Florence2Config(
        vision_config=copy.deepcopy(VISION_CONFIG),
        text_config=text,
        image_token_id=tokenizer.token_to_id(tiny.IMAGE_TOKEN),
    )
    model = Florence2ForConditionalGeneration(config)
    model.generation_config = GenerationConfig(**GENERATION_CONFIG)
    loc0 = tokenizer.token_to_id("<loc_0>")
    emb = model.get_input_embeddings().weight
    if not isinstance(emb, torch.Tensor):
        raise TypeError(f"the input embeddings' weight is a {type(emb).__name__}, not a tensor")
    d = emb.shape[1]
    g = torch.Generator().manual_seed(seed)
    freqs = torch.exp(torch.linspace(math.log(0.5), math.log(60.0), d // 2)) * 2 * math.pi
    t = torch.arange(shapes.NUM_BINS, dtype=torch.float32)[:, None] / shapes.NUM_BINS
    phase = torch.rand(d // 2, generator=g) * 2 * math.pi
    smooth = torch.cat([torch.sin(t * freqs + phase), torch.cos(t * freqs + phase)], dim=1)
    with torch.no_grad():
        emb[loc0 : loc0 + shapes.NUM_BINS] = 0.05 * smooth + 0.01 * torch.randn(
            shapes.NUM_BINS, d, generator=g
        )
        for name, p in model.named_parameters():
            if "encoder_attn." in name and name.endswith(("q_proj.weight", "k_proj.weight")):
                p.mul_(CROSS_ATTENTION_QK_SCALE)
    return model


class Encoder:
    """Samples -> model tensors, exactly as ``Florence2Processor`` builds them (tested against it)."""

    def __init__(self, tokenizer, num_image_tokens: int):
        self.tokenizer = tokenizer
        self.image_prefix = [tokenizer.token_to_id(tiny.IMAGE_TOKEN)] * num_image_tokens
        self.pad = tokenizer.token_to_id("<pad>")
        self.mean = np.array(tiny.IMAGE_MEAN, np.float32)
        self.std = np.array(tiny.IMAGE_STD, np.float32)

    def pixels(self, images: Sequence) -> np.ndarray:
        """[B, 3, S, S] float32: the images (already S x S) rescaled and normalised."""
        arr = np.stack([np.asarray(im.convert("RGB"), np.float32) for im in images]) / 255.0
        return ((arr - self.mean) / self.std).transpose(0, 3, 1, 2).copy()

    def prompts(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """input_ids and attention_mask [B, T]: image tokens, then ``<s> prompt </s>``, right-padded."""
        rows = [self.image_prefix + self.tokenizer.encode(construct_prompt(t)).ids for t in texts]
        return self._pad(rows, self.pad)

    def targets(self, targets: Sequence[str]) -> np.ndarray:
        """labels [B, L]: ``<s> target </s>``, padded with -100 (ignored by the loss)."""
        rows = [self.tokenizer.encode(t).ids[:MAX_TARGET_TOKENS] for t in targets]
        return self._pad(rows, -100)[0]

    @staticmethod
    def _pad(rows: list[list[int]], value: int) -> tuple[np.ndarray, np.ndarray]:
        width = max(len(r) for r in rows)
        ids = np.full((len(rows), width), value, np.int64)
        mask = np.zeros((len(rows), width), np.int64)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = r
            mask[i, : len(r)] = 1
        return ids, mask


def model_inputs(samples: Sequence[shapes.Sample], encoder: Encoder) -> dict:
    """The ``Florence2ForConditionalGeneration.forward`` keywords (with ``labels``) for ``samples``."""
    import torch

    ids, mask = encoder.prompts([s.text for s in samples])
    return {
        "pixel_values": torch.from_numpy(encoder.pixels([s.image for s in samples])),
        "input_ids": torch.from_numpy(ids),
        "attention_mask": torch.from_numpy(mask),
        "labels": torch.from_numpy(encoder.targets([s.target for s in samples])),
    }


def training_batch(rng: np.random.Generator, encoder: Encoder, batch_size: int) -> tuple[dict, tuple]:
    """One batch of fresh examples (tasks drawn with ``shapes.TASK_WEIGHTS``): model inputs, and the
    auxiliary targets (cell classes [B, G*G], cell boxes [B, G*G, 4]) of :func:`shapes.cell_labels`."""
    import torch

    samples = [shapes.make_sample(shapes.sample_task(rng), rng, IMAGE_SIZE) for _ in range(batch_size)]
    grid = tiny.image_grid(IMAGE_SIZE)
    cells = [shapes.cell_labels(s.scene, IMAGE_SIZE, grid) for s in samples]
    aux = (
        torch.from_numpy(np.stack([c[0] for c in cells])),
        torch.from_numpy(np.stack([c[1] for c in cells])),
    )
    return model_inputs(samples, encoder), aux


def cell_head(model):
    """A linear probe on the vision tokens (projector output [B, 1 + G*G, D], the grid tokens after the pooled one)
    predicting each cell's class and box: a training-only auxiliary loss that keeps the image features
    informative while the decoder is still learning the answer formats. Without it the decoder first learns
    the answers' language prior, the image carries no gradient worth following, and the vision tower drifts
    to a constant (measured: the loss with shuffled images equalled the loss with the right ones after 600
    steps). The head is not part of the saved checkpoint."""
    import torch

    return torch.nn.Linear(model.config.text_config.d_model, shapes.CELL_CLASSES + 4)


def aux_loss(head, features, aux: tuple, box_weight: float):
    """Cross-entropy of the cell classes plus ``box_weight`` x L1 of the object boxes on covered cells."""
    import torch

    classes, boxes = aux
    out = head(features[:, 1:])
    n = shapes.CELL_CLASSES
    loss = torch.nn.functional.cross_entropy(out[..., :n].reshape(-1, n), classes.reshape(-1))
    covered = (classes > 0).float()[..., None]
    l1 = ((out[..., n:].sigmoid() - boxes).abs() * covered).sum() / covered.sum().clamp(min=1)
    return loss + box_weight * l1


def image_reliance(model, batch: dict) -> float:
    """Loss with each image swapped for the next one minus the loss with the right images (0: image ignored)."""
    import torch

    model.eval()
    with torch.no_grad():
        right = model(**batch).loss.item()
        swapped = model(**dict(batch, pixel_values=batch["pixel_values"].roll(1, 0))).loss.item()
    model.train()
    return swapped - right


def _lr_at(step: int, opts: TrainOptions) -> float:
    """Linear warm-up, then cosine decay to 5 % of the peak."""
    if step < opts.warmup:
        return opts.lr * (step + 1) / opts.warmup
    p = (step - opts.warmup) / max(opts.steps - opts.warmup, 1)
    return opts.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * p)))


def train(model, encoder: Encoder, opts: TrainOptions, log=print, save=None) -> list[dict]:
    """Run ``opts.steps`` AdamW steps in place; returns the logged losses. ``save()`` every ``opts.save_every``."""
    import torch

    torch.set_num_threads(opts.threads)
    torch.manual_seed(opts.seed + 1)  # the auxiliary head's init
    rng = np.random.default_rng(opts.seed)
    head = cell_head(model)
    features: dict = {}
    hook = model.model.multi_modal_projector.register_forward_hook(
        lambda m, i, out: features.__setitem__("f", out)
    )
    named = list(model.named_parameters()) + [("aux_head." + n, p) for n, p in head.named_parameters()]
    decay = [p for n, p in named if p.ndim >= 2 and "embed" not in n]
    rest = [p for n, p in named if not (p.ndim >= 2 and "embed" not in n)]
    optim = torch.optim.AdamW(
        [{"params": decay, "weight_decay": opts.weight_decay}, {"params": rest, "weight_decay": 0.0}],
        lr=opts.lr,
        betas=(0.9, 0.98),
    )
    # the image_reliance probe: two held-out examples per task, from their own seed
    probe = model_inputs(tiny_eval.held_out_set(2, opts.eval_seed + 1, IMAGE_SIZE), encoder)
    model.train()
    history, running, running_aux, start = [], 0.0, 0.0, time.perf_counter()
    for step in range(opts.stop_after or opts.steps):
        for group in optim.param_groups:
            group["lr"] = _lr_at(step, opts)
        batch, aux = training_batch(rng, encoder, opts.batch_size)
        loss = model(**batch).loss
        extra = (
            aux_loss(head, features["f"], aux, opts.aux_box_weight) if opts.aux_weight else loss.new_zeros(())
        )
        optim.zero_grad(set_to_none=True)
        (loss + opts.aux_weight * extra).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optim.step()
        running += loss.item()
        running_aux += extra.item()
        if (step + 1) % opts.log_every == 0 or step + 1 == (opts.stop_after or opts.steps):
            n = (step % opts.log_every) + 1
            entry = {
                "step": step + 1,
                "loss": round(running / n, 4),
                "aux_loss": round(running_aux / n, 4),
                "image_reliance": round(image_reliance(model, probe), 4),
                "seconds": round(time.perf_counter() - start, 1),
            }
            history.append(entry)
            log(json.dumps(entry))
            running = running_aux = 0.0
        if (
            save is not None
            and opts.save_every
            and (step + 1) % opts.save_every == 0
            and step + 1 < (opts.stop_after or opts.steps)
        ):
            save()
    hook.remove()
    model.eval()
    return history


def save_checkpoint(model, tokenizer, out: Path) -> None:
    """The transformers checkpoint folder: weights, config, tokenizer and processor files."""
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tiny._save_tokenizer(tokenizer, out)
    tiny._write_json(out / "preprocessor_config.json", tiny.preprocessor_config(IMAGE_SIZE))
    tiny._write_json(
        out / "processor_config.json",
        {
            "processor_class": "Florence2Processor",
            "num_additional_image_tokens": 0,
            "post_processor_config": copy.deepcopy(tiny.POST_PROCESSOR_CONFIG),
        },
    )


def _continue_from(folder: Path, tokenizer) -> tuple[Florence2ForConditionalGeneration, list[dict]]:
    """The model of a checkpoint this trainer wrote, and its training record(s), to train a further phase."""
    from transformers import Florence2ForConditionalGeneration, GenerationConfig

    record = json.loads((folder / "eval.json").read_text())["training"]
    from tokenizers import Tokenizer

    if Tokenizer.from_file(str(folder / "tokenizer.json")).get_vocab(True) != tokenizer.get_vocab(True):
        raise SystemExit(
            f"{folder}: its tokenizer is not the one this trainer builds; cannot continue from it"
        )
    model = Florence2ForConditionalGeneration.from_pretrained(folder)
    model.generation_config = GenerationConfig(**GENERATION_CONFIG)
    earlier = record.pop("earlier_phases", [])
    return model, [*earlier, record]


def run(out_dir: str | Path, opts: TrainOptions, log=print) -> dict:
    """Build, train, evaluate and save; returns the evaluation report (also in ``eval.json``)."""
    import torch

    out = Path(out_dir)
    tokenizer = build_tokenizer()
    model, earlier = (
        (build_model(tokenizer, opts.seed), [])
        if not opts.init
        else _continue_from(Path(opts.init), tokenizer)
    )
    n_params = sum(p.numel() for p in model.parameters())
    log(
        f"# {n_params / 1e6:.2f} M parameters, {opts.steps} steps of {opts.batch_size}, {opts.threads} threads"
    )
    encoder = Encoder(tokenizer, tiny.image_grid(IMAGE_SIZE) ** 2 + 1)
    start, cpu_start = time.perf_counter(), time.process_time()
    partial = out.with_name(out.name + ".partial")
    history = train(model, encoder, opts, log, save=lambda: save_checkpoint(model, tokenizer, partial))
    train_seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    save_checkpoint(model, tokenizer, out)
    with torch.no_grad():
        report = evaluate_checkpoint(out, opts.eval_per_task, opts.eval_seed)
    report["training"] = {
        **asdict(opts),
        "parameters": n_params,
        "train_seconds": round(train_seconds, 1),
        "train_cpu_seconds": round(cpu_seconds, 1),
        "final_loss": history[-1]["loss"] if history else None,
        "torch": torch.__version__,
    }
    if earlier:  # the phases before this one, oldest first (each as its own eval.json recorded it)
        report["training"]["earlier_phases"] = earlier
    tiny._write_json(out / "eval.json", report)
    log_file = {"history": history}
    if opts.init:
        log_file["earlier"] = json.loads((Path(opts.init) / "training_log.json").read_text())
    tiny._write_json(out / "training_log.json", log_file)
    tiny_eval.write_model_card(out, report)
    shutil.rmtree(partial, ignore_errors=True)
    return report


# ----------------------------------------------------------------------------- evaluation, transformers side


def transformers_generate(
    checkpoint: str | Path, max_new_tokens: int = tiny_eval.MAX_NEW_TOKENS
) -> tiny_eval.Generate:
    """Greedy ``Florence2ForConditionalGeneration.generate`` on a checkpoint folder, decoded like the processor."""
    import torch
    from tokenizers import Tokenizer
    from transformers import Florence2ForConditionalGeneration

    model = Florence2ForConditionalGeneration.from_pretrained(checkpoint, attn_implementation="eager").eval()
    tokenizer = Tokenizer.from_file(str(Path(checkpoint) / "tokenizer.json"))
    image_size = json.loads((Path(checkpoint) / "preprocessor_config.json").read_text())["size"]["height"]
    encoder = Encoder(tokenizer, tiny.image_grid(image_size) ** 2 + 1)

    def generate(images, texts):
        ids, mask = encoder.prompts(texts)
        with torch.no_grad():
            out = model.generate(
                pixel_values=torch.from_numpy(encoder.pixels(images)),
                input_ids=torch.from_numpy(ids),
                attention_mask=torch.from_numpy(mask),
                max_new_tokens=max_new_tokens,
                num_beams=1,
                do_sample=False,
            )
        return [tokenizer.decode(row.tolist(), skip_special_tokens=False) for row in out]

    return generate


def evaluate_checkpoint(checkpoint: str | Path, per_task: int, seed: int) -> dict:
    """:func:`.tiny_eval.evaluate` of :func:`transformers_generate` on a held-out set (the model card's report)."""
    report = tiny_eval.evaluate(transformers_generate(checkpoint), tiny_eval.held_out_set(per_task, seed))
    report.pop("decoded")
    report["eval"] = {
        "per_task": per_task,
        "seed": seed,
        "decoding": "greedy",
        "max_new_tokens": tiny_eval.MAX_NEW_TOKENS,
    }
    return report


def main(argv: Sequence[str] | None = None) -> int:
    defaults = TrainOptions()
    p = argparse.ArgumentParser(
        prog="python -m florence2_export.toy.train_tiny", description=__doc__.splitlines()[0]
    )
    p.add_argument("out", help="checkpoint folder to write (created; files in it are replaced)")
    for name, value in asdict(defaults).items():
        p.add_argument("--" + name.replace("_", "-"), type=type(value), default=value)
    args = p.parse_args(argv)
    opts = TrainOptions(**{k: getattr(args, k) for k in asdict(defaults)})
    if opts.steps < 1 or opts.batch_size < 1 or opts.threads < 1 or opts.eval_per_task < 1:
        print("steps, batch-size, threads and eval-per-task must be at least 1", file=sys.stderr)
        return 2
    report = run(args.out, opts)
    print(json.dumps(report["summary"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
