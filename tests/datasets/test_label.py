"""``florence2 label`` (florence2_runtime.datasets): a generated folder of images of every kind, a PDF, a
video and a corrupt file labelled by the trained toy model into COCO, YOLO and VOC datasets that
pycocotools and supervision load; resumed after SIGKILL and after Ctrl-C with the result of an
uninterrupted run; never written over."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("supervision", reason="the label extra: pip install -e '.[label]'")
pytest.importorskip("pycocotools", reason="the label extra: pip install -e '.[label]'")
pytest.importorskip("pypdfium2", reason="the label extra: pip install -e '.[label]'")
pytest.importorskip("av", reason="the label extra: pip install -e '.[label]'")

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:pycocotools")  # its own, under numpy 2

from PIL import Image

from florence2_runtime.cli import main
from florence2_runtime.datasets import LabelSpec, label
from florence2_runtime.datasets.batching import answer_batch
from florence2_runtime.datasets.detections import Detection, answer_scores
from florence2_runtime.datasets.journal import JOURNAL_FILE, OutputFolder, Record, read_errors, read_records
from florence2_runtime.datasets.sources import list_source, read_image
from florence2_runtime.datasets.writers import image_name, kept, parse_split, split_of
from florence2_runtime.errors import MissingDependencyError
from tests.helpers.label_sources import write_images, write_source

COCO = "_annotations.coco.json"


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> tuple[Path, dict[str, int]]:
    root = tmp_path_factory.mktemp("label-source") / "photos"
    return root, write_source(root)


@pytest.fixture(scope="module")
def big_source(tmp_path_factory) -> Path:
    """24 plain pictures: long enough to stop a run in the middle."""
    root = tmp_path_factory.mktemp("label-big") / "photos"
    write_images(root, 24, seed=7, nested=False)
    return root


@pytest.fixture(scope="module")
def coco_run(shapes_model, source, tmp_path_factory):
    out = tmp_path_factory.mktemp("label-coco") / "dataset"
    return out, label(shapes_model, source[0], out, batch_size=4, progress="off")


def _coco(out: Path, split: str = "train"):
    from pycocotools.coco import COCO as CocoApi

    return CocoApi(str(out / split / COCO))


def _content(out: Path) -> tuple[dict, dict]:
    """What a dataset holds: its journal by key, and its COCO files without their timestamps."""
    records = {r.key: r for r in read_records(out)}
    files = {}
    for path in sorted(out.glob(f"*/{COCO}")):
        data = json.loads(path.read_text())
        for image in data["images"]:
            image.pop("date_captured", None)
        files[path.parent.name] = data
    return records, files


# --- the dataset ---------------------------------------------------------------------------------------
def test_coco_holds_one_image_per_image_page_and_frame(coco_run, source):
    out, report = coco_run
    counts = source[1]
    coco = _coco(out)
    expected = counts["images"] + counts["pages"] + counts["frames"]
    assert len(coco.imgs) == expected == report.labelled == report.images["train"]
    names = sorted(img["file_name"] for img in coco.imgs.values())
    assert len(set(names)) == expected and all((out / "train" / n).is_file() for n in names)
    keys = sorted(r.key for r in read_records(out))
    assert sum("#page=" in k for k in keys) == 2 and sum("#t=" in k for k in keys) == 3
    assert {k for k in keys if "/" in k and "#" not in k} >= {
        "a/img01.JPG",
        "a/b/img02.png",
    }  # nested, any case
    # every detection of the journal is one COCO annotation, with its class
    records = read_records(out)
    assert len(coco.anns) == sum(len(r.detections) for r in records) > 0
    assert sorted(c["name"] for c in coco.cats.values()) == sorted(report.classes)
    # the corrupt file is logged, the run went on, the report says so
    errors = read_errors(out)
    assert [e["key"] for e in errors] == ["a/broken.jpg"] and "cannot decode" in errors[0]["error"]
    assert report.failed == 1 and not report.interrupted


def test_labels_are_the_models_answers(coco_run, shapes_model, source):
    """Each image's detections equal ``Florence2.run`` on that image (the batches change nothing)."""
    out, _ = coco_run
    for r in [r for r in read_records(out) if "#t=" not in r.key][:6]:
        image = Image.open(out / r.file)
        answer = shapes_model.run(image, "<OD>")["<OD>"]
        assert [d.label for d in r.detections] == answer["labels"]
        assert [list(d.xyxy) for d in r.detections] == [list(map(float, b)) for b in answer["bboxes"]]


def test_a_jpeg_or_png_is_kept_byte_for_byte(coco_run, source):
    out, _ = coco_run
    by_key = {r.key: r for r in read_records(out)}
    assert (out / by_key["img00.jpg"].file).read_bytes() == (source[0] / "img00.jpg").read_bytes()
    assert by_key["a/b/img05.webp"].file.endswith(".png")  # other formats become PNG
    assert by_key["clip.mp4#t=1.000"].file.endswith(".jpg")


@pytest.mark.parametrize("fmt", ["yolo", "voc"])
def test_yolo_and_voc_load_back_with_supervision(shapes_model, source, tmp_path, fmt):
    import supervision as sv

    out = tmp_path / fmt
    report = label(
        shapes_model,
        source[0],
        out,
        format=fmt,
        split="train=0.6,valid=0.4",
        seed=3,
        batch_size=4,
        progress="off",
    )
    records = read_records(out)
    assert sorted(report.images) == ["train", "valid"] and sum(report.images.values()) == len(records)
    assert all(n > 0 for n in report.images.values())
    for split in ("train", "valid"):
        if fmt == "yolo":
            ds = sv.DetectionDataset.from_yolo(
                f"{out}/{split}/images", f"{out}/{split}/labels", f"{out}/data.yaml"
            )
        else:
            ds = sv.DetectionDataset.from_pascal_voc(f"{out}/{split}/images", f"{out}/{split}/annotations")
        mine = {Path(r.file).name: r for r in records if r.split == split}
        assert sorted(Path(p).name for p in ds.image_paths) == sorted(mine)
        for path, found in ds.annotations.items():
            record = mine[Path(path).name]
            names = [ds.classes[i] for i in found.class_id] if len(found) else []
            assert sorted(names) == sorted(d.label for d in record.detections)
            ours = sorted(tuple(d.xyxy) for d in record.detections)
            np.testing.assert_allclose(sorted(map(tuple, found.xyxy)), ours, atol=1.0)  # YOLO: 5 decimals
    if fmt == "yolo":
        import yaml

        data = yaml.safe_load((out / "data.yaml").read_text())
        assert data["train"] == "train/images" and data["val"] == "valid/images"
        assert data["names"] == list(report.classes)


@pytest.mark.slow
def test_segmentation_polygons_become_coco_segmentation_and_masks(shapes_model, source, tmp_path):
    import supervision as sv

    out = tmp_path / "seg"
    spec = dict(task="<REFERRING_EXPRESSION_SEGMENTATION>", classes="circle,square,triangle,star")
    label(shapes_model, source[0], out, batch_size=4, progress="off", **spec)
    records = read_records(out)
    with_polygons = [d for r in records for d in r.detections if d.polygons]
    assert with_polygons
    coco = _coco(out)
    assert [c["name"] for c in sorted(coco.cats.values(), key=lambda c: c["id"])] == spec["classes"].split(
        ","
    )
    by_file = {Path(r.file).name: r for r in records}
    for image in coco.imgs.values():
        anns = coco.imgToAnns[image["id"]]
        ours = [(d.label, [list(p) for p in d.polygons]) for d in by_file[image["file_name"]].detections]
        theirs = [(coco.cats[a["category_id"]]["name"], a["segmentation"]) for a in anns]
        assert theirs == ours  # exactly the model's polygons, in order
        assert all(coco.annToMask(a).any() for a in anns)
    yolo = tmp_path / "seg-yolo"
    label(shapes_model, source[0], yolo, format="yolo", batch_size=4, progress="off", **spec)
    ds = sv.DetectionDataset.from_yolo(f"{yolo}/train/images", f"{yolo}/train/labels", f"{yolo}/data.yaml")
    assert sum(len(d) for d in ds.annotations.values()) == sum(len(r.detections) for r in records)
    assert all(d.mask is not None for d in ds.annotations.values() if len(d))


def test_open_vocabulary_classes_share_one_vision_encoding(shapes_model, source, tmp_path):
    out = tmp_path / "ovd"
    report = label(shapes_model, source[0], out, classes="circle, star", batch_size=4, progress="off")
    assert report.classes == ("circle", "star")
    settings = json.loads((out / "florence2-label.json").read_text())
    assert settings["task"] == "<OPEN_VOCABULARY_DETECTION>" and settings["classes"] == ["circle", "star"]
    assert {d.label for r in read_records(out) for d in r.detections} <= {"circle", "star"}


def test_a_pdf_or_a_video_alone_is_a_source(shapes_model, source, tmp_path):
    report = label(shapes_model, source[0] / "a" / "doc.pdf", tmp_path / "pdf", progress="off")
    assert report.images == {"train": 2}
    report = label(shapes_model, source[0] / "clip.mp4", tmp_path / "video", every=0.5, progress="off")
    assert report.images == {"train": 6}  # 3 s at 4 frames a second, one every 0.5 s
    listing = tmp_path / "list.txt"
    listing.write_text("# two pictures\nimg00.jpg\n\na/img01.JPG\n")
    (tmp_path / "img00.jpg").write_bytes((source[0] / "img00.jpg").read_bytes())
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "img01.JPG").write_bytes((source[0] / "a" / "img01.JPG").read_bytes())
    report = label(shapes_model, listing, tmp_path / "listed", progress="off")
    assert sorted(r.key for r in read_records(tmp_path / "listed")) == ["a/img01.JPG", "img00.jpg"]


# --- resuming ------------------------------------------------------------------------------------------
def _start(model_folder: Path, source: Path, out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "florence2_runtime.cli",
            "label",
            str(model_folder),
            str(source),
            "--out",
            str(out),
        ]
        + ["--batch-size", "2", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _journal_lines(out: Path) -> int:
    path = out / JOURNAL_FILE
    return path.read_bytes().count(b"\n") if path.is_file() else 0


def _stop_after(proc: subprocess.Popen, out: Path, lines: int, sig: int) -> None:
    deadline = time.monotonic() + 240
    while _journal_lines(out) < lines:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the run wrote no journal"
        time.sleep(0.01)
    proc.send_signal(sig)


@pytest.fixture(scope="module")
def uninterrupted(shapes_model, big_source, tmp_path_factory):
    out = tmp_path_factory.mktemp("label-whole") / "dataset"
    label(shapes_model, big_source, out, batch_size=2, split="train=0.7,valid=0.3", progress="off")
    return _content(out)


@pytest.mark.slow
def test_killed_and_rerun_equals_an_uninterrupted_run(
    shapes_onnx_folder, big_source, uninterrupted, tmp_path
):
    out = tmp_path / "dataset"
    proc = _start(shapes_onnx_folder, big_source, out, "--split", "train=0.7,valid=0.3")
    _stop_after(proc, out, 4, signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    done = _journal_lines(out)
    assert 4 <= done < 24, "the run ended before it could be killed"
    rerun = _start(shapes_onnx_folder, big_source, out, "--split", "train=0.7,valid=0.3")
    stdout, stderr = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, stderr
    assert f"labelled {24 - done} now" in stdout and f"{done} done before" in stdout
    keys = [json.loads(line)["key"] for line in (out / JOURNAL_FILE).read_text().splitlines()]
    assert len(keys) == len(set(keys)) == 24  # no picture labelled twice
    assert _content(out) == uninterrupted


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_and_a_rerun_completes(shapes_onnx_folder, big_source, uninterrupted, tmp_path):
    from pycocotools.coco import COCO as CocoApi

    out = tmp_path / "dataset"
    proc = _start(shapes_onnx_folder, big_source, out, "--split", "train=0.7,valid=0.3")
    _stop_after(proc, out, 4, signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "stopping after the batch in flight" in stderr and "stopped early" in stdout
    done = _journal_lines(out)
    assert done < 24
    loaded = sum(len(CocoApi(str(p)).imgs) for p in out.glob(f"*/{COCO}"))
    assert loaded == done  # what was labelled is written and loads
    rerun = _start(shapes_onnx_folder, big_source, out, "--split", "train=0.7,valid=0.3")
    assert rerun.wait(300) == 0
    rerun.communicate()
    assert _content(out) == uninterrupted


def test_a_torn_journal_line_is_cut_and_its_picture_labelled_again(shapes_model, big_source, tmp_path):
    out = tmp_path / "dataset"
    label(shapes_model, big_source, out, batch_size=4, progress="off")
    whole = _content(out)
    journal = out / JOURNAL_FILE
    lines = journal.read_bytes().splitlines(keepends=True)
    journal.write_bytes(b"".join(lines[:5]) + lines[5][:30])  # a kill in the middle of a write
    report = label(shapes_model, big_source, out, batch_size=4, progress="off")
    assert (report.labelled, report.skipped) == (19, 5)
    assert _content(out) == whole


# --- never written over ----------------------------------------------------------------------------------
def test_an_existing_dataset_is_not_overwritten(shapes_onnx_folder, source, tmp_path, capsys):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "mine.txt").write_text("keep me")
    args = ["label", str(shapes_onnx_folder), str(source[0] / "a" / "doc.pdf"), "--out"]
    assert main([*args, str(foreign), "--overwrite"]) == 2
    assert "not empty" in capsys.readouterr().err and (foreign / "mine.txt").read_text() == "keep me"
    out = tmp_path / "dataset"
    assert main([*args, str(out), "-q"]) == 0
    capsys.readouterr()
    assert main([*args, str(out), "-q", "--task", "<REGION_PROPOSAL>"]) == 2
    err = capsys.readouterr().err
    assert "other settings" in err and "--overwrite" in err and len(err.strip().splitlines()) == 1
    assert main([*args, str(out), "-q", "--task", "<REGION_PROPOSAL>", "--overwrite"]) == 0
    assert {d.label for r in read_records(out) for d in r.detections} <= {"object"}


@pytest.mark.skipif(sys.platform == "win32", reason="no flock")
def test_a_folder_being_labelled_is_refused(tmp_path):
    first = OutputFolder.open(tmp_path / "d", {"task": "<OD>"})
    try:
        with pytest.raises(ValueError, match="another process"):
            OutputFolder.open(tmp_path / "d", {"task": "<OD>"})
    finally:
        first.close()
    OutputFolder.open(tmp_path / "d", {"task": "<OD>"}).close()  # released with it


def test_bad_arguments_are_one_line_and_exit_2(shapes_onnx_folder, source, tmp_path, capsys):
    base = ["label", str(shapes_onnx_folder), str(source[0]), "--out", str(tmp_path / "x")]
    for extra, message in [
        (["--split", "train=0.5,valid=0.4"], "add up to 1"),
        (["--task", "<REFERRING_EXPRESSION_SEGMENTATION>"], "needs classes"),
        (["--task", "<OCR_WITH_REGION>", "--classes", "a"], "takes no classes"),
        (["--classes", "cat,,dog"], "comma-separated"),
    ]:
        assert main(base + extra) == 2, extra
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    assert (
        main(["label", str(shapes_onnx_folder), str(tmp_path / "nothing"), "--out", str(tmp_path / "y")]) == 2
    )
    assert "source not found" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


# --- the parts -------------------------------------------------------------------------------------------
def test_split_draws_are_stable_and_close_to_the_fractions():
    splits = parse_split("train=0.8,valid=0.2")
    draws = [split_of(f"img{i}.jpg", splits, seed=0) for i in range(4000)]
    assert abs(draws.count("valid") / 4000 - 0.2) < 0.03
    assert draws == [split_of(f"img{i}.jpg", splits, seed=0) for i in range(4000)]
    assert draws != [split_of(f"img{i}.jpg", splits, seed=1) for i in range(4000)]
    assert parse_split(None) == (("train", 1.0),)
    for bad in ["train", "train=x", "train=0.5,train=0.5", "../x=1", "a=0,b=1"]:
        with pytest.raises(ValueError):
            parse_split(bad)


def test_image_names_are_unique_and_safe():
    keys = ["a/b_c.jpg", "a_b/c.jpg", "a b/c.jpg", "doc.pdf#page=1", "clip.mp4#t=1.000", "é/ü.png"]
    names = [image_name(k, ".jpg") for k in keys]
    assert len(set(names)) == len(names)
    assert all("/" not in n and " " not in n and "#" not in n for n in names)


def test_scores_are_read_in_one_place_and_min_score_keeps_unscored():
    assert answer_scores({"bboxes": [[0, 0, 1, 1]], "labels": ["a"]}, 1) == [None]
    assert answer_scores({"bboxes": [[0, 0, 1, 1]], "labels": ["a"], "scores": [0.25]}, 1) == [0.25]
    dets = [
        Detection("a", (0, 0, 2, 2), 0.9),
        Detection("b", (0, 0, 2, 2), 0.1),
        Detection("c", (0, 0, 2, 2)),
    ]
    assert [d.label for d in kept(dets, 0.5)] == ["a", "c"] and kept(dets, None) == dets
    record = Record("k", "train/k.png", "train", (4, 4), tuple(dets))
    assert Record.from_json(json.loads(record.to_json())) == record


def test_label_spec_table():
    assert LabelSpec.make().prompts == [("<OD>", None)]
    spec = LabelSpec.make(classes="cat, dog")
    assert spec.task == "<OPEN_VOCABULARY_DETECTION>" and spec.prompts == [
        ("<OPEN_VOCABULARY_DETECTION>", "cat"),
        ("<OPEN_VOCABULARY_DETECTION>", "dog"),
    ]
    od = LabelSpec.make("<OD>", ["car"])  # <OD> names its objects; classes keep some
    answers = [{"<OD>": {"bboxes": [[0, 0, 5, 5], [1, 1, 4, 4]], "labels": ["car", "tree"]}}]
    assert [d.label for d in od.detections(answers, (10, 10))] == ["car"]
    ocr = LabelSpec.make("<OCR_WITH_REGION>")
    answer = [{"<OCR_WITH_REGION>": {"quad_boxes": [[1, 2, 9, 2, 9, 6, 1, 6]], "labels": ["HELLO"]}}]
    assert ocr.detections(answer, (10, 10)) == [Detection("text", (1, 2, 9, 6))]
    with pytest.raises(ValueError, match="does not find objects"):
        LabelSpec.make("<CAPTION>")


def test_answer_batch_equals_a_loop_of_run(shapes_model, big_source):
    images = [Image.open(p).convert("RGB") for p in sorted(big_source.iterdir())[:5]]
    prompts = [("<OPEN_VOCABULARY_DETECTION>", "circle"), ("<OPEN_VOCABULARY_DETECTION>", "star")]
    batched = answer_batch(shapes_model, images, prompts, {})  # with scores, equal up to float rounding
    for im, answers in zip(images, batched):
        for (task, text), got in zip(prompts, answers):
            want = shapes_model.run(im, task, text, scores=True)[task]
            assert {**got[task], "scores": None} == {**want, "scores": None}
            assert got[task]["scores"] == pytest.approx(want["scores"], rel=1e-4)


def test_only_a_jpeg_or_png_shown_as_stored_is_kept_as_it_is(tmp_path):
    Image.new("RGB", (8, 8), "red").save(tmp_path / "png-named.tif", "PNG")
    assert not read_image(tmp_path / "png-named.tif").as_stored  # would be a .tif holding a PNG
    Image.new("RGB", (8, 8), "red").save(tmp_path / "upper.PNG")
    assert read_image(tmp_path / "upper.PNG").as_stored
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    Image.new("RGB", (8, 4)).save(tmp_path / "turned.jpg", exif=exif)
    turned = read_image(tmp_path / "turned.jpg")
    assert not turned.as_stored and turned.image.size == (4, 8)  # what the model sees is what is saved
    assert isinstance(read_image(tmp_path / "missing.png"), ValueError)


def test_progress_is_a_bar_on_a_terminal_and_log_lines_elsewhere(monkeypatch):
    import io

    from florence2_runtime.datasets import progress

    lines = io.StringIO()
    meter = progress.Progress(10, 2, stream=lines)  # not a terminal: log lines
    monkeypatch.setattr(progress, "LOG_EVERY_S", 0.0)
    meter.update(3, failed=1)
    assert meter.mode == "log" and "5/10 images (50 %)" in lines.getvalue() and "1 failed" in lines.getvalue()
    assert "images/s" in lines.getvalue() and "ETA" in lines.getvalue()
    meter.close(finished=True)
    assert lines.getvalue().splitlines()[-1].startswith("label: 5/5 images (100 %)")

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    screen = Terminal()
    bar = progress.Progress(4, stream=screen)
    bar.update(4)
    bar.close(finished=True)
    assert bar.mode == "bar" and "4/4" in screen.getvalue() and "img/s" in screen.getvalue()


def test_a_folder_inside_the_source_is_not_read(tmp_path):
    write_images(tmp_path / "src", 3, nested=False)
    (tmp_path / "src" / "out" / "train").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "src" / "out" / "train" / "x.png")
    files = list_source(tmp_path / "src", exclude=tmp_path / "src" / "out")
    assert [f.key for f in files] == ["img00.jpg", "img01.JPG", "img02.png"]


def test_a_missing_package_names_the_extra_and_the_install_command(monkeypatch, tmp_path):
    from florence2_runtime.datasets import evaluation

    monkeypatch.setitem(sys.modules, "pycocotools", None)
    monkeypatch.setitem(sys.modules, "pycocotools.coco", None)
    with pytest.raises(MissingDependencyError, match=r"pip install -e '\.\[label\]'"):
        evaluation.coco_eval({"images": [], "annotations": [], "categories": []}, [])


def test_no_image_is_labelled_by_a_run_on_a_missing_model(source, tmp_path):
    assert not os.path.exists(tmp_path / "m")
    with pytest.raises(Exception):  # noqa: B017 - the loader's own error; the point is the folder
        label(str(tmp_path / "m"), source[0], tmp_path / "out", progress="off")
    assert not (tmp_path / "out").exists()
