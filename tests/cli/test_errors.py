"""The command line as a new user meets it (issue #14): every mistake is one line on stderr and exit 2,
checked before the model loads; a failed export is one line, exit 1, and leaves nothing behind."""

from __future__ import annotations

import pytest

from florence2_runtime.cli import main
from tests.helpers.images import make_test_image


@pytest.fixture
def no_model_load(monkeypatch):
    """Loading a model fails the test: the argument checks must come first."""
    from florence2_runtime import model

    def refuse(*_args, **_kwargs):
        raise AssertionError("the model was loaded before the arguments were checked")

    monkeypatch.setattr(model.Florence2, "from_pretrained", classmethod(lambda cls, *a, **k: refuse()))


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "a.png"
    make_test_image(64, 48, seed=1).save(path)
    return path


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("florence2: "), err
    return lines[0]


def test_output_in_a_missing_folder_is_refused_before_loading(no_model_load, image, tmp_path, capsys):
    code = main(
        [
            "run",
            str(tmp_path / "model"),
            str(image),
            "--task",
            "<OD>",
            "-o",
            str(tmp_path / "missing" / "x.json"),
        ]
    )
    assert code == 2
    assert "does not exist" in _one_line_error(capsys)


def test_url_image_says_urls_are_not_fetched(no_model_load, tmp_path, capsys):
    code = main(["run", str(tmp_path / "model"), "https://example.com/cat.jpg", "--task", "<OD>"])
    assert code == 2
    line = _one_line_error(capsys)
    assert "https://example.com/cat.jpg" in line and "not fetched" in line


def test_url_image_in_the_library():
    from florence2_runtime.inputs.images import load_image

    with pytest.raises(ValueError, match="not fetched"):
        load_image("http://example.com/a.png")


def test_undecodable_image_names_its_path_once(tiny_folder, tmp_path, image, capsys):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg at all")
    assert main(["run", str(tiny_folder), str(bad), "--task", "<OD>"]) == 2
    line = _one_line_error(capsys)
    assert line.count(str(bad)) == 1, line
    assert (
        main(["run", str(tiny_folder), str(bad), str(image), "--task", "<OD>", "--max-new-tokens", "3"]) == 1
    )
    captured = capsys.readouterr()
    assert captured.err.count(str(bad)) == 1, captured.err
    assert captured.out.count(str(bad)) == 1  # the error record


@pytest.mark.parametrize(
    "argv,word",
    [
        (["serve", "m", "--port", "99999"], "port"),
        (["serve", "m", "--port", "0"], "port"),
        (["serve", "m", "--threads", "0"], "threads"),
        (["run", "m", "a.png", "--task", "<OD>", "--threads", "0"], "threads"),
        (["bench", "m", "--threads", "-1"], "threads"),
        (["serve", "m", "--api-key", "k", "--api-key-file", "f"], "api-key"),
    ],
)
def test_bad_numbers_are_refused(no_model_load, argv, word, capsys):
    assert main(argv) == 2
    assert word in _one_line_error(capsys)


@pytest.mark.slow
def test_failed_export_is_one_line_exit_1_and_leaves_nothing(tiny_checkpoint, tmp_path, monkeypatch, capsys):
    """The int8 check made to fail (tolerance 0): no folder that looks complete, the summary once, one
    error line, exit 1; an existing folder given with --overwrite is left as it was."""
    from florence2_export import precision

    monkeypatch.setitem(precision.VARIANT_TOLERANCE, "int8", 0.0)
    out = tmp_path / "out"
    assert main(["export", str(tiny_checkpoint), str(out), "--dtype", "int8"]) == 1
    err = capsys.readouterr().err
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no temporary folder left beside it
    assert err.count("FAILED its check") == 1 and "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert (
        last.startswith("florence2: error: the export failed its check (int8 ")
        and "nothing was written" in last
    )

    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    assert main(["export", str(tiny_checkpoint), str(out), "--dtype", "int8", "--overwrite"]) == 1
    capsys.readouterr()
    assert [p.name for p in out.iterdir()] == ["mine.txt"] and (out / "mine.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
