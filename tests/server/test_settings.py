"""The server's settings are declared once (``server/settings.py``): the dataclass checks, the ``serve``
flags with their defaults, the ``FLORENCE2_*`` environment variables and the docs table all come from
those declarations. No model, no server: argparse and the dataclasses only."""

from __future__ import annotations

import re
from dataclasses import fields

import pytest

from florence2_runtime.cli import build_parser, main
from florence2_runtime.server import ServerLimits
from florence2_runtime.server.ray_app import RaySettings
from florence2_runtime.server.settings import MIB, env_name, settings_fields, settings_table


def serve_args(*argv: str):
    return build_parser().parse_args(["serve", "model", *argv])


def test_every_field_is_a_setting_with_a_flag_an_env_variable_and_a_row():
    table = settings_table(ServerLimits, RaySettings)
    for cls in (ServerLimits, RaySettings):
        assert [f.name for f in settings_fields(cls)] == [f.name for f in fields(cls)]
        for f in settings_fields(cls):
            assert env_name(f).startswith("FLORENCE2_") and f"`{env_name(f)}`" in table
    rows = [line for line in table.splitlines() if line.startswith("| `--")]
    assert len(rows) == len(fields(ServerLimits)) + len(fields(RaySettings))
    assert "| `--max-body-mb` | `FLORENCE2_MAX_BODY_MB` | 20 |" in table  # the flag's unit, MiB
    assert "| `--max-pixels` | `FLORENCE2_MAX_PIXELS` | 40000000 |" in table
    assert "| `--jpeg-draft` | `FLORENCE2_JPEG_DRAFT` | off |" in table
    assert "| `--api-key` | `FLORENCE2_API_KEY` | none |" in table


def test_serve_help_shows_every_default(capsys):
    with pytest.raises(SystemExit) as e:
        main(["serve", "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    options = re.split(r"\n  (?=-)", text.split("\noptions:\n", 1)[1])
    for option in options[1:]:  # [0] is --help
        flag = option.split()[0].rstrip(",")
        if flag != "--revision":  # engine.hub's option (a hub revision; none: the repository's main)
            assert "default" in option, flag
    for f in settings_fields(ServerLimits):
        assert f"${env_name(f)}" in " ".join(text.split()), f.name


def test_flags_then_environment_then_defaults():
    env = {"FLORENCE2_MAX_QUEUE": "9", "FLORENCE2_MAX_BODY_MB": "1.5", "FLORENCE2_JPEG_DRAFT": "yes"}
    limits = ServerLimits.from_args(serve_args("--timeout", "3", "--max-queue", "7"), env)
    assert limits.request_timeout_s == 3 and limits.max_queue == 7  # the flag wins over the environment
    assert limits.max_body_bytes == int(1.5 * MIB) and limits.jpeg_draft is True
    assert limits.max_batch_size == ServerLimits().max_batch_size
    limits = ServerLimits.from_args(serve_args("--no-jpeg-draft", "--max-asset-mb", "2"), env)
    assert limits.jpeg_draft is False and limits.max_asset_bytes == 2 * MIB
    assert ServerLimits.from_args(serve_args(), {}) == ServerLimits()
    ray = RaySettings.from_args(serve_args("--ray", "--max-replicas", "4"), {"FLORENCE2_NUM_CPUS": "0.5"})
    assert ray == RaySettings(max_replicas=4, num_cpus=0.5)


def test_bad_values_are_refused_naming_the_flag_the_variable_or_the_field(capsys):
    assert main(["serve", "model", "--max-queue", "0"]) == 2
    assert "--max-queue: must be an integer >= 1, got '0'" in capsys.readouterr().err
    assert main(["serve", "model", "--timeout", "soon"]) == 2
    assert "--timeout: must be a number > 0, got 'soon'" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"\$FLORENCE2_MAX_PIXELS must be an integer >= 1, got '1e6'"):
        ServerLimits.from_args(serve_args(), {"FLORENCE2_MAX_PIXELS": "1e6"})
    with pytest.raises(ValueError, match=r"\$FLORENCE2_JPEG_DRAFT must be true or false"):
        ServerLimits.from_args(serve_args(), {"FLORENCE2_JPEG_DRAFT": "maybe"})
    for bad in ({"max_batch_size": 0}, {"max_wait_ms": -1}, {"request_timeout_s": 0}, {"jpeg_draft": 1}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            ServerLimits(**bad)
    with pytest.raises(ValueError, match="api_key"):
        ServerLimits(api_key="")
    with pytest.raises(ValueError, match="replicas"):
        RaySettings(replicas=0)


def test_the_api_key_is_never_echoed():
    limits = ServerLimits(api_key="s3cret")
    assert "s3cret" not in repr(limits)
    with pytest.raises(ValueError) as e:
        ServerLimits(api_key=12)  # type: ignore[arg-type]
    assert "12" not in str(e.value)
    assert ServerLimits.from_args(serve_args(), {"FLORENCE2_API_KEY": "from-env"}).api_key == "from-env"
    assert (
        ServerLimits.from_args(serve_args("--api-key", "flag"), {"FLORENCE2_API_KEY": "env"}).api_key
        == "flag"
    )
