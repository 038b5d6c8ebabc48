"""The demo's last lines (issue #29): where its export is, and commands to try next that work as printed."""

from __future__ import annotations

import shlex

from florence2_export.toy.demo import next_steps
from florence2_runtime.cli import main


def test_the_printed_run_command_works(shapes_onnx_folder, tmp_path, monkeypatch, capsys):
    from florence2_export.verify import make_test_image

    image = tmp_path / "demo_00.png"
    make_test_image(128, 128, seed=1).save(image)
    lines = next_steps(shapes_onnx_folder, image).splitlines()
    assert lines[0] == f"# the exported model: {shapes_onnx_folder}"
    commands = [line[1:].split("   #")[0].strip() for line in lines if line.startswith("#   florence2 ")]
    assert [c.split()[1] for c in commands] == ["run", "serve", "export"]
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert main(shlex.split(commands[0])[1:]) == 0
    assert '"scores"' in capsys.readouterr().out and (tmp_path / "answer.png").is_file()
