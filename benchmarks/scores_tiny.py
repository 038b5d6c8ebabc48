"""Do the confidence scores mean something? The trained toy model on held-out generated images.

    python benchmarks/scores_tiny.py                    # 200 images, 3 beams and greedy: ~2 min on 2 cores

Exports ``models/florence2-tiny-shapes`` (cached under ``benchmarks/.cache/``), runs ``<OD>`` with
``scores=True`` on fresh generated scenes (their own seed, never the training stream) and scores the boxes
against the scenes' true boxes with pycocotools (the ``label`` extra):

- AP@0.5 (and AP@0.5:0.95) of the boxes ranked by their scores, against the same boxes with every score
  equal (ranked as the model wrote them): ranking by a meaningful score raises AP;
- the mean score of right boxes (IoU >= 0.5 with a true box of the same label, one-to-one, best score first)
  and of wrong ones.

Also for other definitions of an object's score, from the same tokens (the chosen one is documented in
``florence2_runtime/tasks/confidence.py``): the label's tokens only, the location tokens only. Writes
``benchmarks/results/scores_tiny.{json,md}`` and ``models/florence2-tiny-shapes/scores.json`` (the model
card's "Confidence scores" section, re-rendered).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import platform
import statistics
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "runtime"), str(ROOT / "export")]

from florence2_export.toy import shapes, tiny_eval
from florence2_export.toy.demo import TINY_SHAPES
from florence2_runtime import Florence2
from florence2_runtime.generation import generate_scored
from florence2_runtime.tasks.batch import task_decoding_options
from florence2_runtime.tasks.confidence import object_scores
from florence2_runtime.tasks.postprocess import ObjectSpans, parse_type_of, parse_with_spans
from florence2_runtime.tasks.prompts import encode_prompts

SEED = 20261207  # the held-out scenes' own seed
CHOSEN = "label and location (chosen)"
TASKS = (
    "<OD>",
    "<DENSE_REGION_CAPTION>",
    "<REGION_PROPOSAL>",
    "<CAPTION_TO_PHRASE_GROUNDING>",
    "<OPEN_VOCABULARY_DETECTION>",
)
DEFINITIONS = {  # which parts of a box (what it says: its label; where it is: its location tokens) count
    CHOSEN: lambda s: s,
    "label only": lambda s: ObjectSpans(s.what),
    "location only": lambda s: ObjectSpans((0, 0), s.where),
    "every token alike": lambda s: ObjectSpans((0, 0), (s.what, *s.where)),
}


def export_model(cache: Path) -> Path:
    folder = cache / "florence2-tiny-shapes"
    if not (folder / "florence2_config.json").is_file():
        from florence2_export import export

        export(TINY_SHAPES, folder, quiet=True)
    return folder


def scored_answers(model: Florence2, samples, num_beams: int) -> list[tuple[dict, dict[str, list]]]:
    """Per sample: ``run(..., scores=True)``'s answer and each definition's object scores (same tokens)."""
    options = task_decoding_options(model, num_beams=num_beams)
    out = []
    for sample in samples:
        answer = model.run(sample.image, sample.task, scores=True, num_beams=num_beams, **sample.inputs)
        answer = answer[sample.task]
        encoded = model.encode_image(sample.image)
        ids, mask = encode_prompts(model.tokenizer, model.config, [sample.text])
        inference = model.engine.start(encoded.features[None], ids, mask, options.num_beams)
        (row,) = generate_scored(inference, 1, options)
        text, offsets = model.tokenizer.decode_with_offsets([options.decoder_start_token_id, *row.ids])
        logprobs = np.concatenate([[np.nan], row.logprobs]).astype(np.float32)
        parsed, spans = parse_with_spans(text, parse_type_of(sample.task), encoded.image_size)
        assert {**parsed, "scores": answer["scores"]} == answer, "the re-derived answer differs from run()'s"
        variants = {
            name: object_scores([part(s) for s in spans], offsets, logprobs)
            for name, part in DEFINITIONS.items()
        }
        assert variants[CHOSEN] == answer["scores"]
        # an object with no token in the parts a definition reads scores 0 there (label only: no label)
        variants = {name: [v or 0.0 for v in values] for name, values in variants.items()}
        out.append((answer, variants))
    return out


def coco_ap(samples, answers, scores: list[list[float]]) -> dict[str, float]:
    """pycocotools' bbox AP of ``<OD>`` answers whose boxes are ranked by ``scores``."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    names = sorted({s.name for sample in samples for s in sample.scene.shapes})
    cat = {n: i + 1 for i, n in enumerate(names)}
    images, anns, dets = [], [], []
    for image_id, (sample, answer, box_scores) in enumerate(zip(samples, answers, scores), start=1):
        images.append({"id": image_id, "width": 128, "height": 128})
        for s in sample.scene.shapes:
            x1, y1, x2, y2 = s.box
            box = [x1, y1, x2 - x1, y2 - y1]
            ann = {"id": len(anns) + 1, "image_id": image_id, "bbox": box, "area": box[2] * box[3]}
            anns.append({**ann, "category_id": cat[s.name], "iscrowd": 0})
        for (x1, y1, x2, y2), label, score in zip(answer["bboxes"], answer["labels"], box_scores):
            if label in cat:
                box = [x1, y1, x2 - x1, y2 - y1]
                dets.append({"image_id": image_id, "category_id": cat[label], "bbox": box, "score": score})
    gt = COCO()
    categories = [{"id": v, "name": k} for k, v in cat.items()]
    gt.dataset = {"images": images, "annotations": anns, "categories": categories}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        ev = COCOeval(gt, gt.loadRes(dets), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {"AP@0.5:0.95": float(ev.stats[0]), "AP@0.5": float(ev.stats[1])}


def right_and_wrong(samples, answers, scores) -> tuple[list[float], list[float]]:
    """Scores of right boxes (IoU >= 0.5 with a not yet matched true box of the same label, best score
    first; region proposals have no label) and of wrong ones."""
    right, wrong = [], []
    for sample, answer, box_scores in zip(samples, answers, scores):
        truth, pred = tiny_eval.truth_and_prediction(sample, answer)
        used = [False] * len(truth)
        for i in sorted(range(len(pred)), key=lambda i: -box_scores[i]):
            label, box = pred[i]
            hits = [
                (tiny_eval.box_iou(box, true_box), j)
                for j, (name, true_box) in enumerate(truth)
                if not used[j] and name == label and tiny_eval.box_iou(box, true_box) >= tiny_eval.IOU
            ]
            if hits:
                used[max(hits)[1]] = True
                right.append(box_scores[i])
            else:
                wrong.append(box_scores[i])
    return right, wrong


def separation(right: list[float], wrong: list[float]) -> float | None:
    """The chance that a right box scores above a wrong one (ties count half): the ROC AUC."""
    if not right or not wrong:
        return None
    r, w = np.asarray(right)[:, None], np.asarray(wrong)[None, :]
    return float(((r > w).sum() + 0.5 * (r == w).sum()) / (r.size * w.size))


def measure(model: Florence2, count: int, num_beams: int) -> dict:
    report: dict = {"images": count, "num_beams": num_beams, "tasks": {}}
    for task in TASKS:
        rng = np.random.default_rng(SEED)
        samples = [shapes.make_sample(task, rng) for _ in range(count)]
        pairs = scored_answers(model, samples, num_beams)
        answers = [a for a, _ in pairs]
        found: dict = {"objects": sum(len(a["scores"]) for a in answers), "definitions": {}}
        if task == "<OD>":
            found["AP, all scores equal"] = coco_ap(
                samples, answers, [[1.0] * len(a["scores"]) for a in answers]
            )
        for name in DEFINITIONS:
            scores = [v[name] for _, v in pairs]
            right, wrong = right_and_wrong(samples, answers, scores)
            d = {
                "right": len(right),
                "wrong": len(wrong),
                "mean_score_right": statistics.fmean(right) if right else None,
                "mean_score_wrong": statistics.fmean(wrong) if wrong else None,
                "separation": separation(right, wrong),
            }
            if task == "<OD>":
                d["AP"] = coco_ap(samples, answers, scores)
            found["definitions"][name] = d
        report["tasks"][task] = found
    return report


def machine() -> str:
    """The CPU's model name (Linux), else the platform's."""
    with contextlib.suppress(OSError, StopIteration):
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
        return f"{cpu}, Python {platform.python_version()}"
    return f"{platform.processor() or platform.machine()}, Python {platform.python_version()}"


def _f(v) -> str:
    return "-" if v is None else f"{v:.3f}"


def markdown(result: dict) -> str:
    lines = [
        "# Confidence scores on the trained toy model",
        "",
        f"`python benchmarks/scores_tiny.py --images {result['images']}`: {result['images']} held-out generated "
        f"scenes per task (seed {SEED}) of `models/florence2-tiny-shapes`; AP from pycocotools. "
        f"Machine: {result['machine']}.",
        "",
        "## `<OD>`: AP of the boxes ranked by their scores",
        "",
        "| search | ranked by | AP@0.5 | AP@0.5:0.95 | right boxes: mean score | wrong boxes: mean score |",
        "|---|---|---|---|---|---|",
    ]
    for run in result["runs"]:
        search = "greedy" if run["num_beams"] == 1 else f"{run['num_beams']} beams"
        od = run["tasks"]["<OD>"]
        const = od["AP, all scores equal"]
        lines.append(
            f"| {search} | all scores equal | {const['AP@0.5']:.3f} | {const['AP@0.5:0.95']:.3f} | | |"
        )
        for name, d in od["definitions"].items():
            lines.append(
                f"| {search} | {name} | {d['AP']['AP@0.5']:.3f} | {d['AP']['AP@0.5:0.95']:.3f} | "
                f"{_f(d['mean_score_right'])} ({d['right']}) | {_f(d['mean_score_wrong'])} ({d['wrong']}) |"
            )
    lines += [
        "",
        "## Every box task: how well the score separates right from wrong boxes",
        "",
        "Separation: the chance that a right box scores above a wrong one (ROC AUC; 0.5 is no better than chance).",
        "",
        "| search | task | right / wrong boxes | " + " | ".join(DEFINITIONS) + " |",
        "|---|---|---|" + "---|" * len(DEFINITIONS),
    ]
    for run in result["runs"]:
        search = "greedy" if run["num_beams"] == 1 else f"{run['num_beams']} beams"
        for task, found in run["tasks"].items():
            defs = found["definitions"]
            first = next(iter(defs.values()))
            cells = " | ".join(_f(d["separation"]) for d in defs.values())
            lines.append(f"| {search} | `{task}` | {first['right']} / {first['wrong']} | {cells} |")
    lines += [
        "",
        "A score weighs what an object says (its label) and where it is (its location tokens) equally: the "
        "geometric mean of the two parts' geometric-mean token probabilities "
        '(`florence2_runtime/tasks/confidence.py`). "all scores equal" ranks the same boxes in the order the '
        "model wrote them. Right: IoU >= 0.5 with a true box of the same label (one-to-one, best score first).",
        "",
    ]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=200)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "scores_tiny")
    p.add_argument("--cache", type=Path, default=ROOT / "benchmarks" / ".cache")
    p.add_argument("--no-card", action="store_true", help="do not update the model card")
    args = p.parse_args(argv)
    model = Florence2.from_pretrained(export_model(args.cache), threads=2)
    runs = [measure(model, args.images, beams) for beams in (3, 1)]
    result = {"images": args.images, "machine": machine(), "runs": runs}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    if not args.no_card:
        (TINY_SHAPES / "scores.json").write_text(json.dumps(result, indent=2) + "\n")
        report = json.loads((TINY_SHAPES / "eval.json").read_text())
        tiny_eval.write_model_card(TINY_SHAPES, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
