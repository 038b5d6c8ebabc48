"""``florence2 run`` with --output, --draw, several images, folders, regions and --typed."""

from __future__ import annotations

import io
import json

import pytest
from PIL import Image

from florence2_runtime import Florence2Result
from florence2_runtime.cli import build_parser, main
from florence2_runtime.cli.run import run_command
from tests.helpers.images import make_test_image

GEN = ["--max-new-tokens", "12", "--num-beams", "1"]
GEN_KW = dict(max_new_tokens=12, num_beams=1)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli-images")
    paths = []
    for i, (w, h) in enumerate([(120, 90), (40, 150), (200, 60)]):
        paths.append(folder / f"im{i}.png")
        make_test_image(w, h, seed=10 + i).save(paths[-1])
    (folder / "notes.txt").write_text("not an image, not picked from the folder")
    return paths


def _lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_single_image_output_file_and_drawing(tiny_folder, tiny_model, images, tmp_path, capsys):
    out, drawn = tmp_path / "result.json", tmp_path / "annotated.png"
    code = main(
        [
            "run",
            str(tiny_folder),
            str(images[0]),
            "--task",
            "<OD>",
            "--output",
            str(out),
            "--draw",
            str(drawn),
            *GEN,
        ]
    )
    assert code == 0 and capsys.readouterr().out == ""  # the result went to the file
    expected = tiny_model.run(images[0], "<OD>", **GEN_KW)
    assert json.loads(out.read_text()) == expected
    assert Image.open(drawn).size == Image.open(images[0]).size


def test_typed_output(tiny_folder, tiny_model, images, capsys):
    assert main(["run", str(tiny_folder), str(images[1]), "--task", "<CAPTION>", "--typed", *GEN]) == 0
    got = Florence2Result.from_json(capsys.readouterr().out)
    assert got == tiny_model.predict(images[1], "<CAPTION>", **GEN_KW)


def test_several_images_and_a_folder_give_json_lines(tiny_folder, tiny_model, images, tmp_path, capsys):
    drawn = tmp_path / "drawn"
    code = main(
        [
            "run",
            str(tiny_folder),
            str(images[0].parent),
            str(images[1]),
            "--task",
            "<CAPTION_TO_PHRASE_GROUNDING>",
            "--text",
            "a red ball",
            "--draw",
            str(drawn),
            *GEN,
        ]
    )
    captured = capsys.readouterr()
    assert code == 0
    assert captured.err == ""  # not a terminal: no progress bar
    lines = _lines(captured.out)
    assert [line["image"] for line in lines] == [str(p) for p in images] + [str(images[1])]
    for line in lines:
        path = line.pop("image")
        assert line == tiny_model.run(path, "<CAPTION_TO_PHRASE_GROUNDING>", text="a red ball", **GEN_KW)
    assert sorted(p.name for p in drawn.iterdir()) == ["im0.png", "im1-2.png", "im1.png", "im2.png"]


def test_several_regions_one_line_each(tiny_folder, tiny_model, images, tmp_path, capsys):
    out = tmp_path / "regions.jsonl"
    drawn = tmp_path / "regions.png"
    code = main(
        [
            "run",
            str(tiny_folder),
            str(images[0]),
            "--task",
            "<REGION_TO_DESCRIPTION>",
            "--region",
            "0.1,0.1,0.5,0.5",
            "--region",
            "0,0,1,1",
            "--region-format",
            "normalized",
            "-o",
            str(out),
            "--draw",
            str(drawn),
            *GEN,
        ]
    )
    assert code == 0
    lines = _lines(out.read_text())
    assert [line.pop("region") for line in lines] == [[0.1, 0.1, 0.5, 0.5], [0.0, 0.0, 1.0, 1.0]]
    assert lines == [
        r.raw
        for r in tiny_model.predict_regions(
            images[0],
            "<REGION_TO_DESCRIPTION>",
            [(0.1, 0.1, 0.5, 0.5), (0, 0, 1, 1)],
            region_format="normalized",
            **GEN_KW,
        )
    ]
    assert Image.open(drawn).size == (120, 90)


def test_progress_bar_on_a_terminal_and_quiet(tiny_folder, images):
    class Tty(io.StringIO):
        def isatty(self):
            return True

    argv = ["run", str(tiny_folder), *map(str, images), "--task", "<OD>", *GEN]
    for extra, shown in [([], True), (["--quiet"], False)]:
        args = build_parser().parse_args(argv + extra)
        out, err = io.StringIO(), Tty()
        assert run_command(args, GEN_KW, stdout=out, stderr=err) == 0
        assert len(_lines(out.getvalue())) == 3
        assert ("3/3" in err.getvalue()) is shown


def test_a_broken_image_among_several_is_reported_and_the_rest_run(tiny_folder, images, tmp_path, capsys):
    broken = tmp_path / "broken.png"
    broken.write_text("not a png")
    code = main(["run", str(tiny_folder), str(images[0]), str(broken), "--task", "<OD>", *GEN])
    captured = capsys.readouterr()
    lines = _lines(captured.out)
    assert code == 1
    assert [sorted(line) for line in lines] == [["<OD>", "image"], ["error", "image"]]
    assert lines[1]["image"] == str(broken) and "broken.png" in captured.err


@pytest.mark.parametrize(
    "args, words",
    [
        (
            [
                "{image}",
                "--task",
                "<REGION_TO_CATEGORY>",
                "--region",
                "0.1,0.1,1.5,0.5",
                "--region-format",
                "normalized",
            ],
            "[0, 1]",
        ),
        (
            [
                "{image}",
                "--task",
                "<REGION_TO_CATEGORY>",
                "--region",
                "1,1,2,2",
                "--region-format",
                "percent",
            ],
            "region-format",
        ),
        (["{image}", "--task", "<OD>", "--region", "1,1,2,2"], "<OD>"),
        (["{image}", "--task", "<REGION_TO_CATEGORY>", "--region", "1,1,2,2", "--region", "3,3"], "region"),
        (["{image}", "--task", "<OD>", "--draw", "{tmp}/out.nope"], "extension"),
        (["{image}", "--task", "<OD>", "--draw", "{tmp}/missing/out.png"], "does not exist"),
        (["{image}", "{image}", "--task", "<OD>", "--draw", "{image}"], "folder"),
        (["{tmp}/empty", "--task", "<OD>"], "no image files"),
        (["{image}", "--task", "<OD>", "--output", "{tmp}"], "--output"),
        (["{image}", "--task", "<REGION_TO_CATEGORY>", "--region", "1,1,500,2"], "outside"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(tiny_folder, images, tmp_path, capsys, args, words):
    (tmp_path / "empty").mkdir()
    argv = ["run", str(tiny_folder)] + [a.format(image=images[0], tmp=tmp_path) for a in args]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("florence2: error:") and words in err, err


def test_several_tasks_one_line_per_image_with_every_answer(
    tiny_folder, tiny_model, images, tmp_path, capsys
):
    tasks = ["<CAPTION>", "<OD>", "<OCR>", "<OPEN_VOCABULARY_DETECTION>", "<REGION_TO_CATEGORY>"]
    argv = ["run", str(tiny_folder), str(images[0]), str(images[2])]
    for t in tasks:
        argv += ["--task", t]
    drawn = tmp_path / "drawn"
    assert main([*argv, "--text", "ball", "--region", "1,2,30,40", "--draw", str(drawn), *GEN]) == 0
    lines = _lines(capsys.readouterr().out)
    assert [line.pop("image") for line in lines] == [str(images[0]), str(images[2])]
    for line, path in zip(lines, [images[0], images[2]]):
        assert list(line) == tasks
        for t in tasks:
            inputs = (
                {"text": "ball"}
                if t == "<OPEN_VOCABULARY_DETECTION>"
                else ({"region": (1, 2, 30, 40)} if t == "<REGION_TO_CATEGORY>" else {})
            )
            assert {t: line[t]} == json.loads(json.dumps(tiny_model.run(path, t, **inputs, **GEN_KW)))
    assert sorted(p.name for p in drawn.iterdir()) == ["im0.png", "im2.png"]
    assert (
        main(
            [
                "run",
                str(tiny_folder),
                str(images[1]),
                "--task",
                "<CAPTION>",
                "--task",
                "<OD>",
                "--typed",
                *GEN,
            ]
        )
        == 0
    )
    typed = json.loads(capsys.readouterr().out)
    assert {t: Florence2Result.from_json(v) for t, v in typed.items()} == {
        t: tiny_model.predict(images[1], t, **GEN_KW) for t in ["<CAPTION>", "<OD>"]
    }


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--task", "<CAPTION>", "--task", "<NOPE>"], "unknown task '<NOPE>'"),
        (["--task", "<CAPTION>", "--task", "<CAPTION>"], "listed twice"),
        (["--task", "<CAPTION>", "--task", "<OD>", "--text", "a dog"], "none of the tasks"),
        (["--task", "<CAPTION>", "--task", "<OD>", "--region", "1,2,3,4"], "none of the tasks"),
        (["--task", "<OD>", "--task", "<REGION_TO_CATEGORY>"], "needs an input"),
        (
            ["--task", "<OD>", "--task", "<REGION_TO_OCR>", "--region", "1,2,3,4", "--region", "1,1,5,5"],
            "single --task",
        ),
    ],
)
def test_bad_task_lists_are_one_line_and_exit_2(tiny_folder, images, capsys, extra, message):
    assert main(["run", str(tiny_folder), str(images[0]), *extra, *GEN]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_run_help_states_the_defaults(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "up to 1024 new tokens" in out and "repeat it for several tasks" in out


@pytest.mark.parametrize(
    "extra, says, never",
    [
        (["--task", "<CAPTION_TO_PHRASE_GROUNDING>"], "needs an input: pass --text", "pass text"),
        (["--task", "<REGION_TO_CATEGORY>"], "pass --region X1,Y1,X2,Y2 in pixels", "region=("),
        (["--task", "<OD>", "--text", "a dog"], "pass neither --text nor --region", "neither text"),
        (
            ["--task", "<REGION_TO_CATEGORY>", "--text", "a dog"],
            "in pixels, or --text of the form",
            "region=(",
        ),
        (["--task", "<OD>", "--max-new-tokens", "100000"], "--max-new-tokens 100000 is too large", "max_new"),
        (
            ["--task", "<OD>", "--min-new-tokens", "5", "--max-new-tokens", "3"],
            "--min-new-tokens (5) is larger than --max-new-tokens (3)",
            "_new_tokens",
        ),
    ],
)
def test_errors_name_the_flags_not_the_python_keywords(tiny_folder, images, capsys, extra, says, never):
    assert main(["run", str(tiny_folder), str(images[0]), *extra]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and says in err and never not in err, err


def test_a_region_of_fractions_needs_its_format(tiny_folder, tiny_model, images, capsys):
    """0.45,0.2,0.7,0.53 taken as pixels would be a sliver in the corner: without --region-format it is refused."""
    argv = [
        "run",
        str(tiny_folder),
        str(images[0]),
        "--task",
        "<REGION_TO_CATEGORY>",
        "--region",
        "0.45,0.2,0.7,0.53",
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "pass --region-format normalized" in err, err
    assert main([*argv, "--region-format", "normalized", *GEN]) == 0
    normalized = tiny_model.run(
        images[0], "<REGION_TO_CATEGORY>", region=(0.45, 0.2, 0.7, 0.53), region_format="normalized", **GEN_KW
    )
    assert json.loads(capsys.readouterr().out) == json.loads(json.dumps(normalized))
    assert main([*argv, "--region-format", "pixels", *GEN]) == 0  # said explicitly: taken as pixels
    capsys.readouterr()
    assert main([*argv[:-1], "0.45,0.2,7,5.3", *GEN]) == 0  # not all <= 1: pixels


def test_every_help_states_the_defaults():
    """Each option of every sub-command but serve (whose flags the server's settings generate) shows its
    default in --help; those without a value say what applies instead, except the inputs themselves."""
    import argparse

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    inputs = {
        "--adapter",
        "--task",
        "--text",
        "--region",
        "--draw",
        "--coco",
        "--images",
        "--yolo",
    }  # absent: not given
    for name, command in commands.items():
        if name == "serve":
            continue
        text = " ".join(command.format_help().split())
        for action in command._actions:
            flag = next(iter(action.option_strings), None)
            if (
                flag is None
                or action.required
                or action.default is False
                or action.default == argparse.SUPPRESS
            ):
                continue
            if action.default is not None:
                assert f"default: {action.default}" in text, (name, flag)
            elif flag not in inputs:
                assert "default" in command._get_formatter()._expand_help(action), (name, flag)
