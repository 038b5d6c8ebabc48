"""The ``florence2`` command: JSON output equal to ``run()``, one-line errors with exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from florence2_runtime.cli import main
from tests.helpers.images import make_test_image
from tests.helpers.paths import ROOT


@pytest.fixture(scope="module")
def image_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "image.png"
    make_test_image(120, 90, seed=2).save(path)
    return path


def test_run_prints_the_run_dict(tiny_folder, tiny_model, image_file, capsys):
    code = main(
        [
            "run",
            str(tiny_folder),
            str(image_file),
            "--task",
            "<REGION_TO_DESCRIPTION>",
            "--region",
            "10,10,60,50",
            "--max-new-tokens",
            "10",
            "--num-beams",
            "2",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    expected = tiny_model.run(
        image_file, "<REGION_TO_DESCRIPTION>", region=(10, 10, 60, 50), max_new_tokens=10, num_beams=2
    )
    assert json.loads(out.splitlines()[-1]) == expected


@pytest.mark.parametrize(
    "args, words",
    [
        (["run", "{model}", "{image}", "--task", "<NOPE>"], "<NOPE>"),
        (["run", "{model}", "{image}", "--task", "<OD>", "--text", "extra"], "<OD>"),
        (["run", "{model}", "{image}", "--task", "<CAPTION_TO_PHRASE_GROUNDING>"], "text"),
        (["run", "{model}", "{image}", "--task", "<REGION_TO_CATEGORY>", "--region", "1,2,3"], "region"),
        (["run", "{model}", "{image}", "--task", "<REGION_TO_CATEGORY>", "--region", "5,5,1,1"], "region"),
        (["run", "{model}", "missing.png", "--task", "<OD>"], "missing.png"),
        (["run", "no-such-folder", "{image}", "--task", "<OD>"], "no-such-folder"),
        (["run", "{model}", "{image}", "--task", "<OD>", "--num-beams", "zero"], "num-beams"),
        (["run", "{model}", "{image}", "--task", "<OD>", "--provider", "nope"], "nope"),
        (["run", "{model}", "{image}"], "--task"),
        (["frobnicate"], "frobnicate"),
    ],
)
def test_bad_arguments_give_one_line_and_exit_2(tiny_folder, image_file, capsys, args, words):
    argv = [a.format(model=tiny_folder, image=image_file) for a in args]
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("florence2: error:") and words in err


def test_not_an_image_is_a_clear_error(tiny_folder, tmp_path, capsys):
    bad = tmp_path / "text.png"
    bad.write_text("not an image")
    assert main(["run", str(tiny_folder), str(bad), "--task", "<OD>"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "image" in err


def test_export_without_the_extra_says_what_to_install(tmp_path):
    """With torch unimportable, ``florence2 export`` names the extra to install (in a fresh process)."""
    script = (
        "import importlib.abc, sys\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('torch', 'transformers'):\n"
        "            raise ImportError(f'No module named {name!r}')\n"
        "sys.meta_path.insert(0, Block())\n"
        "from florence2_runtime.cli import main\n"
        f"sys.exit(main(['export', 'some/checkpoint', {str(tmp_path / 'out')!r}]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    # the project is not on PyPI: the hint installs the extra from the clone
    assert "pip install -e '.[export]'" in proc.stderr and "florence2-onnx[" not in proc.stderr


def test_install_hints_work_for_a_clone():
    """Every missing optional dependency names its extra as installed from the clone, in one line."""
    from florence2_runtime.errors import MissingDependencyError, require

    with pytest.raises(MissingDependencyError) as error:
        require("no_such_module_for_this_test", "serve", "Serving")
    message = str(error.value)
    assert "install the 'serve' extra: pip install -e '.[serve]'" in message and "scripts/setup.sh" in message
    assert "florence2-onnx[" not in message and "\n" not in message


def test_console_script_entry_point(tiny_folder, image_file):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "florence2_runtime.cli",
            "run",
            str(tiny_folder),
            str(image_file),
            "--task",
            "<CAPTION>",
            "--max-new-tokens",
            "5",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert set(json.loads(proc.stdout)) == {"<CAPTION>"}


@pytest.mark.parametrize(
    "src, words", [("nobody/nothing-here", "not reachable"), ("./no/such/folder", "no such folder")]
)
def test_export_of_an_unavailable_checkpoint_fails_fast(tmp_path, monkeypatch, capsys, src, words):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["export", src, str(tmp_path / "out")]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]  # progress lines come before it
    assert last.startswith("florence2: error:") and words in last


def test_export_of_a_folder_that_is_not_a_checkpoint(tmp_path, capsys):
    (tmp_path / "ckpt").mkdir()
    assert main(["export", str(tmp_path / "ckpt"), str(tmp_path / "out")]) == 2
    assert "config.json" in capsys.readouterr().err


def test_too_long_text_and_too_many_tokens_are_value_errors(tiny_model, image_file):
    cfg = tiny_model.config
    with pytest.raises(ValueError, match=r"prompt is .* tokens long"):
        tiny_model.run(
            image_file, "<CAPTION_TO_PHRASE_GROUNDING>", text="ball " * (cfg.max_position_embeddings + 5)
        )
    with pytest.raises(ValueError, match="max_new_tokens"):
        tiny_model.run(image_file, "<OD>", max_new_tokens=cfg.max_position_embeddings)


def test_version_has_one_source(capsys):
    """``florence2 --version`` prints ``__version__``, which pyproject.toml reads (dynamic) instead of repeating it."""

    import florence2_runtime

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"florence2 {florence2_runtime.__version__}"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "version" not in project["project"] and project["project"]["dynamic"] == ["version"]
    dynamic = project["tool"]["setuptools"]["dynamic"]["version"]
    assert dynamic == {"attr": "florence2_runtime.__version__"}


def test_license_is_the_mit_text_pyproject_names():

    root = ROOT
    text = (root / "LICENSE").read_text(encoding="utf-8")
    assert text.startswith("MIT License") and "Copyright (c) 2026 The florence2-onnx authors" in text
    assert 'license = { text = "MIT" }' in (root / "pyproject.toml").read_text(encoding="utf-8")
