"""The synthetic shapes data, the toy trainer (a smoke run) and the trained florence2-tiny-shapes model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from florence2_export.toy import shapes, tiny_eval, train_tiny
from florence2_export.toy.demo import demo_requests, is_right
from florence2_runtime.tasks.postprocess import post_process_generation

TASKS = list(shapes.TASK_SCENES)


def _samples(seed: int, per_task: int = 1):
    return tiny_eval.held_out_set(per_task, seed)


def test_samples_are_deterministic():
    a, b = _samples(7), _samples(7)
    assert [(s.task, s.text, s.target) for s in a] == [(s.task, s.text, s.target) for s in b]
    assert all(np.array_equal(np.asarray(x.image), np.asarray(y.image)) for x, y in zip(a, b))
    assert [s.target for s in _samples(8)] != [s.target for s in a]


@pytest.mark.parametrize("seed", range(3))
def test_targets_parse_back_to_the_scene(seed):
    """Each target, post-processed like the processor does, gives the scene's boxes / polygons within 1.5 px."""
    for sample in _samples(seed):
        answer = post_process_generation(sample.target, sample.task, (128, 128))[sample.task]
        scene = sample.scene
        if sample.task in ("<OD>", "<DENSE_REGION_CAPTION>", "<REGION_PROPOSAL>"):
            assert np.allclose(answer["bboxes"], [s.box for s in scene.shapes], atol=1.5)
        elif sample.task == "<OCR_WITH_REGION>":
            assert answer["labels"] == [w.text for w in scene.words]
        elif sample.task in tiny_eval.MASK_TASKS:
            assert tiny_eval.score_answer(sample, answer)["iou"] > 0.9
        elif sample.task in tiny_eval.BOX_TASKS:
            assert tiny_eval.score_answer(sample, answer)["matched"] == len(answer["bboxes"]) > 0
        else:
            assert tiny_eval.score_answer(sample, answer).get("exact") == 1.0


@pytest.mark.parametrize("seed", range(3))
def test_cell_labels_follow_the_scene(seed):
    """The auxiliary targets: a cell is labelled with an object only where that object covers part of it."""
    for sample in _samples(seed):
        classes, boxes = shapes.cell_labels(sample.scene, 128, 4)
        assert classes.shape == (16,) and boxes.shape == (16, 4)
        objects = list(sample.scene.shapes) + list(sample.scene.words)
        assert (classes > 0).any() == bool(objects)
        for cell in np.flatnonzero(classes):
            row, col = divmod(int(cell), 4)
            box = boxes[cell] * 128
            assert (
                box[0] < (col + 1) * 32
                and box[2] > col * 32
                and box[1] < (row + 1) * 32
                and box[3] > row * 32
            )
            assert any(np.allclose(box, o.box, atol=1e-3) for o in objects)
        assert not boxes[classes == 0].any()


def test_the_demo_judges_its_truth_right_and_a_wrong_answer_wrong():
    for r in demo_requests():
        truth = r["truth"][r["task"]]
        assert is_right(r["sample"], truth), r["task"]
        wrong = post_process_generation("", r["task"], (128, 128))[r["task"]]
        assert not is_right(r["sample"], wrong), r["task"]


def test_every_task_is_generated():
    assert set(TASKS) == set(shapes.TASK_WEIGHTS)
    rng = np.random.default_rng(0)
    assert {shapes.sample_task(rng) for _ in range(500)} == set(TASKS)


@pytest.mark.parity
def test_encoder_matches_the_processor(shapes_checkpoint):
    """The trainer's tensors are exactly what Florence2Processor builds for the same images and texts."""
    from tokenizers import Tokenizer
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(shapes_checkpoint, backend="pil")
    encoder = train_tiny.Encoder(Tokenizer.from_file(str(shapes_checkpoint / "tokenizer.json")), 17)
    samples = _samples(3)
    batch = processor(
        text=[s.text for s in samples], images=[s.image for s in samples], return_tensors="np", padding=True
    )
    ids, mask = encoder.prompts([s.text for s in samples])
    np.testing.assert_array_equal(ids, batch["input_ids"])
    np.testing.assert_array_equal(mask, batch["attention_mask"])
    np.testing.assert_allclose(encoder.pixels([s.image for s in samples]), batch["pixel_values"], atol=1e-6)
    labels = encoder.targets([s.target for s in samples])
    for row, s in zip(labels, samples):
        assert (
            list(row[row >= 0]) == processor.tokenizer(s.target)["input_ids"][: train_tiny.MAX_TARGET_TOKENS]
        )


@pytest.mark.slow
def test_training_is_deterministic():
    tokenizer = train_tiny.build_tokenizer()
    encoder = train_tiny.Encoder(tokenizer, 17)
    opts = train_tiny.TrainOptions(steps=2, batch_size=2, log_every=1)
    states = []
    for _ in range(2):
        model = train_tiny.build_model(tokenizer, seed=0)
        history = train_tiny.train(model, encoder, opts, log=lambda _: None)
        assert len(history) == 2 and all(np.isfinite(h["loss"]) for h in history)
        states.append(model.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


@pytest.mark.slow
def test_trainer_smoke_run(tmp_path, capsys):
    """What CI runs instead of training: the whole script for a few steps, then the folder it writes."""
    from transformers import Florence2ForConditionalGeneration

    out = tmp_path / "ckpt"
    assert (
        train_tiny.main(
            [str(out), "--steps", "2", "--batch-size", "2", "--eval-per-task", "1", "--log-every", "1"]
        )
        == 0
    )
    report = json.loads((out / "eval.json").read_text())
    assert set(report["tasks"]) == set(TASKS) and report["training"]["steps"] == 2
    assert "What it cannot do" in (out / "README.md").read_text()
    assert not (tmp_path / "ckpt.partial").exists()
    Florence2ForConditionalGeneration.from_pretrained(out)
    assert "od_box_recall@0.5" in capsys.readouterr().out
    # a second phase from those weights (how the committed model was trained): its record keeps the first
    more = tmp_path / "more"
    assert (
        train_tiny.main(
            [
                str(more),
                "--init",
                str(out),
                "--steps",
                "1",
                "--batch-size",
                "2",
                "--eval-per-task",
                "1",
                "--seed",
                "1",
            ]
        )
        == 0
    )
    training = json.loads((more / "eval.json").read_text())["training"]
    assert training["init"] == str(out) and [p["steps"] for p in training["earlier_phases"]] == [2]
    assert "2 + 1 (phase 1:" in (more / "README.md").read_text()
    assert json.loads((more / "training_log.json").read_text())["earlier"]["history"]


def test_trainer_rejects_bad_options(tmp_path, capsys):
    assert train_tiny.main([str(tmp_path / "x"), "--steps", "0"]) == 2
    assert "at least 1" in capsys.readouterr().err


# --- the committed trained model (against transformers: tests/parity/test_trained_model.py) -------------
def test_answers_agree():
    assert tiny_eval.answers_agree("circle<loc_10><loc_20>", "circle<loc_12><loc_17>", max_bins=3)
    assert not tiny_eval.answers_agree("circle<loc_10><loc_20>", "circle<loc_14><loc_20>", max_bins=3)
    assert not tiny_eval.answers_agree("circle<loc_10>", "square<loc_10>")
    assert not tiny_eval.answers_agree("circle<loc_10>", "circle<loc_10><loc_11>")


@pytest.mark.slow
def test_batched_serving_gives_the_unbatched_answers(shapes_model):
    """The server's dynamic batcher on the trained model: every task in shared batches, same answers as run()."""
    import asyncio

    from florence2_runtime.server.batching import DynamicBatcher, Job
    from florence2_runtime.tasks.batch import decoding_options
    from florence2_runtime.tasks.prompts import build_task_text

    gen = {"max_new_tokens": 80, "num_beams": 3}
    requests = demo_requests(seed=99)
    jobs = [
        Job(
            r["image"],
            build_task_text(
                r["task"], text=r.get("text"), region=r.get("region"), image_size=r["image"].size
            ),
            r["task"],
            gen,
            decoding_options(shapes_model, **gen),
        )
        for r in requests
    ]

    async def main():
        batcher = DynamicBatcher(shapes_model, max_batch_size=8, max_wait_ms=200)
        outcomes = await asyncio.gather(*(batcher.submit(j) for j in jobs))
        await batcher.close()
        return outcomes

    outcomes = asyncio.run(main())
    assert max(o.batch_size for o in outcomes) > 1
    for r, o in zip(requests, outcomes):
        assert o.result == shapes_model.run(
            r["image"], r["task"], text=r.get("text"), region=r.get("region"), **gen
        )


def test_demo_rejects_a_folder_that_is_not_a_checkpoint(tmp_path, capsys):
    from florence2_runtime.cli import main

    assert main(["demo", "--workdir", str(tmp_path / "out"), "--checkpoint", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a checkpoint folder" in err


def _agreement(model, variant, samples) -> tuple[int, int]:
    """(identical answers, task-level agreements: text equal, locations within 5 bins) over the samples."""
    from florence2_runtime.cli.compare import CompareOptions, compare_image

    identical = agree = 0
    for s in samples:
        options = CompareOptions(
            task=s.task,
            text=s.inputs.get("text"),
            region=s.inputs.get("region"),
            max_new_tokens=tiny_eval.MAX_NEW_TOKENS,
        )
        c = compare_image(model, variant, s.image, options)
        identical += c.exact
        texts = [model.tokenizer.batch_decode(np.array([t]))[0] for t in (c.tokens_a, c.tokens_b)]
        agree += tiny_eval.answers_agree(*texts, max_bins=5)
    return identical, agree


@pytest.mark.slow
def test_fp16_keeps_the_answers(shapes_onnx_folder, shapes_model, tmp_path):
    """The trained toy makes agreement measurable: the fp16 export (every graph) gives the same tokens as fp32
    on these held-out images of every task, with the default 3 beams (on 300 images: 95 %, README)."""
    from florence2_export.precision import convert_folder
    from florence2_runtime import Florence2

    convert_folder(shapes_onnx_folder, tmp_path / "fp16", "fp16")
    samples = _samples(4242)
    identical, _ = _agreement(shapes_model, Florence2.from_pretrained(tmp_path / "fp16"), samples)
    assert identical == len(samples)


@pytest.mark.slow
@pytest.mark.xfail(
    reason="no int8 recipe can hold 95 % on this toy: its 8-bit weights alone, computed in float, keep "
    "82-85 % (benchmarks/precision_tiny.py weights:8:BLOCK controls; README, #17)",
    strict=False,
)
def test_int8_meets_the_task_level_target(shapes_onnx_folder, shapes_model, tmp_path):
    from florence2_export.precision import convert_folder
    from florence2_runtime import Florence2

    convert_folder(shapes_onnx_folder, tmp_path / "int8", "int8")
    samples = _samples(4242)
    _, agree = _agreement(shapes_model, Florence2.from_pretrained(tmp_path / "int8"), samples)
    assert agree >= 0.95 * len(samples)
