"""Loading by hub id and alias (florence2_runtime.engine.hub) against a hub stand-in on loopback
(tests/helpers/hubstub.py).

The stand-in holds the committed onnx-community-layout and native exports of the tiny checkpoint with several
precision variants; every test asserts exactly which files were downloaded. Nothing reaches the internet.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from florence2_runtime import Florence2
from florence2_runtime.engine.config import RuntimeConfig
from florence2_runtime.engine.hub import ALIASES, HubError, resolve_model, select
from florence2_runtime.errors import ModelFileError
from tests.helpers.hubstub import TOKEN, HubStub, StubRepo, folder_files, huggingface_hub_at
from tests.helpers.images import make_test_image

COMMUNITY = "onnx-community/Florence-2-base"  # what the alias florence-2-base names
NATIVE = "someone/florence2-native"
JSON_FILES = [
    "config.json",
    "generation_config.json",
    "preprocessor_config.json",
    "processor_config.json",
    "tokenizer.json",
]
GRAPHS = ["vision_encoder", "embed_tokens", "encoder_model"]


def _onnx(names, suffix=""):
    return [f"onnx/{n}{suffix}.onnx" for n in names]


@pytest.fixture(scope="module")
def repos(tiny_community_folder, tiny_folder, tmp_path_factory) -> dict[str, StubRepo]:
    """The stand-in's repositories. onnx-community: fp32 (all three decoder forms), int8 (all three, the vision
    encoder with external data), fp16 (the decoder pair only) - the variants are the fp32 graphs under the
    variant's name, loadable - and q4 / bnb4 files that must never be fetched. Native: the fp32 export at the
    top, and in int8/ the same graphs recorded as an int8 variant (what is downloaded and loaded is what
    these tests check, not the arithmetic; real int8 folders: tests/export/test_int8_recipes.py)."""
    import onnx

    work = tmp_path_factory.mktemp("hub-repos")
    community = folder_files(tiny_community_folder)
    assert set(JSON_FILES) <= set(community), sorted(community)
    onnx_dir = tiny_community_folder / "onnx"
    decoders = ["decoder_model", "decoder_with_past_model", "decoder_model_merged"]
    for name in GRAPHS + decoders:
        community[f"onnx/{name}_int8.onnx"] = onnx_dir / f"{name}.onnx"
    for name in GRAPHS + decoders[:2]:
        community[f"onnx/{name}_fp16.onnx"] = onnx_dir / f"{name}.onnx"
    for name in GRAPHS + decoders:
        community[f"onnx/{name}_q4.onnx"] = community[f"onnx/{name}_bnb4.onnx"] = b"not a graph"
    external = work / "vision_encoder_int8.onnx"  # the int8 vision encoder with its weights beside it
    onnx.save(
        onnx.load(onnx_dir / "vision_encoder.onnx"),
        str(external),
        save_as_external_data=True,
        location="vision_encoder_int8.onnx_data",
        size_threshold=0,
    )
    community["onnx/vision_encoder_int8.onnx"] = external
    community["onnx/vision_encoder_int8.onnx_data"] = work / "vision_encoder_int8.onnx_data"
    community["README.md"] = b"# tiny\n"

    int8 = work / "native-int8"
    shutil.copytree(tiny_folder, int8)
    replace(RuntimeConfig.load(int8), precision="int8", int8_recipe="7bit").save(int8)
    native = {**folder_files(tiny_folder), **folder_files(int8, "int8/"), "README.md": b"# native\n"}
    checkpoint = {"config.json": b'{"model_type": "florence2"}', "model.safetensors": b"weights"}
    return {
        COMMUNITY: StubRepo(community),
        NATIVE: StubRepo(native),
        "someone/gated": StubRepo(dict(native), gated=True),
        "someone/broken": StubRepo(dict(community), missing={"onnx/decoder_model_merged.onnx"}),
        "someone/no-tokenizer": StubRepo({k: v for k, v in community.items() if k != "tokenizer.json"}),
        "someone/checkpoint": StubRepo(checkpoint),
        "someone/other": StubRepo({"README.md": b"hi", "model.onnx": b"x"}),
    }


@pytest.fixture(scope="module")
def hub(repos):
    with HubStub(repos) as stub:
        yield stub


@pytest.fixture
def env(hub, tmp_path, monkeypatch) -> Iterator[dict]:
    """huggingface_hub at the stand-in, a fresh cache, online; the same as environment for subprocesses."""
    hub.clear()
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    with huggingface_hub_at(hub.url, tmp_path / "cache"):
        yield {**os.environ}


def _image():
    return make_test_image(96, 72, seed=5)


def _run(model) -> dict:
    return model.run(_image(), "<OD>", max_new_tokens=12)


def community_files(suffix: str, decoders: list[str]) -> list[str]:
    files = JSON_FILES + _onnx(GRAPHS + decoders, suffix)
    return sorted(files + (["onnx/vision_encoder_int8.onnx_data"] if suffix == "_int8" else []))


@pytest.fixture(scope="module")
def local_community(tiny_community_folder):
    return Florence2.from_pretrained(tiny_community_folder)


# ----------------------------------------------------------------------------- onnx-community repositories


def test_alias_downloads_only_the_fp32_graphs_with_one_decoder(env, hub, local_community):
    model = Florence2.from_pretrained("florence-2-base")
    assert sorted(hub.downloads(COMMUNITY)) == community_files("", ["decoder_model_merged"])
    assert model.engine.sessions.merged and model.name_or_path == "florence-2-base"
    assert Path(env["HF_HUB_CACHE"]) in model.folder.parents  # the standard cache layout under HF_HUB_CACHE
    assert _run(model) == _run(local_community)


@pytest.mark.parametrize(
    "precision, decoders",
    [("int8", ["decoder_model_merged"]), ("fp16", ["decoder_model", "decoder_with_past_model"])],
)
def test_each_precision_downloads_its_graphs_only(env, hub, local_community, precision, decoders):
    model = Florence2.from_pretrained(COMMUNITY, precision=precision)
    assert sorted(hub.downloads(COMMUNITY)) == community_files(f"_{precision}", decoders)
    assert all(p.name.endswith(f"_{precision}.onnx") for p in model.engine.sessions.files)
    assert _run(model) == _run(local_community)  # the variants here are the fp32 graphs renamed


def test_second_precision_then_offline_from_the_cache(env, hub, local_community):
    Florence2.from_pretrained(COMMUNITY)
    Florence2.from_pretrained(COMMUNITY, precision="int8")
    hub.clear()
    for precision in (None, "int8"):  # both in one snapshot; each loads its own files
        model = Florence2.from_pretrained(COMMUNITY, precision=precision, local_files_only=True)
        names = [p.name for p in model.engine.sessions.files]
        assert all(n.endswith("_int8.onnx") == (precision == "int8") for n in names), names
        assert _run(model) == _run(local_community)
    assert hub.log == []  # no request at all
    with pytest.raises(HubError, match=r"onnx/vision_encoder_fp16.onnx, .* not in the cache"):
        Florence2.from_pretrained(COMMUNITY, precision="fp16", local_files_only=True)  # on the hub, not here
    with pytest.raises(HubError, match="no uint8 variant; it has: fp32, fp16, int8, q4, bnb4"):
        Florence2.from_pretrained(COMMUNITY, precision="uint8", local_files_only=True)


def test_offline_default_is_the_online_default(env, hub):
    """Only int8 cached: offline, the default is still fp32 (the cached tree listing knows the repository has
    it), so the error says it is not cached instead of silently loading int8."""
    Florence2.from_pretrained(COMMUNITY, precision="int8")
    with pytest.raises(HubError, match=r"onnx/vision_encoder.onnx.* not in the cache"):
        Florence2.from_pretrained(COMMUNITY, local_files_only=True)


def test_hf_hub_offline_in_a_fresh_process(env, hub, tmp_path, local_community):
    """HF_HUB_OFFLINE=1 read at import time, the hub unreachable: the cached model loads, runs, no torch."""
    Florence2.from_pretrained("florence-2-base", precision="int8")
    image = tmp_path / "a.png"
    _image().save(image)
    script = (
        "import sys, json\n"
        "from florence2_runtime import Florence2\n"
        "m = Florence2.from_pretrained('florence-2-base', precision='int8')\n"
        f"print(json.dumps(m.run({str(image)!r}, '<OD>', max_new_tokens=12)))\n"
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules\n"
    )
    offline = {**env, "HF_HUB_OFFLINE": "1", "HF_ENDPOINT": "http://127.0.0.1:9"}
    hub.clear()
    out = subprocess.run(
        [sys.executable, "-c", script], env=offline, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.splitlines()[-1]) == local_community.run(
        str(image), "<OD>", max_new_tokens=12
    )
    assert hub.log == []


def test_offline_without_a_cache_is_one_clear_error(env):
    with pytest.raises(HubError, match=r"offline .* not in the cache"):
        Florence2.from_pretrained("florence-2-base", local_files_only=True)


def test_revision_pins_a_commit(env, hub, repos):
    sha = repos[COMMUNITY].sha
    model = Florence2.from_pretrained(COMMUNITY, revision=sha)
    assert model.folder.name == sha
    with pytest.raises(HubError, match="revision 'v9' not found"):
        Florence2.from_pretrained(COMMUNITY, revision="v9")


def test_precision_the_repository_lacks_lists_what_it_has(env, hub):
    with pytest.raises(HubError, match="has no uint8 variant; it has: fp32, fp16, int8, q4, bnb4"):
        Florence2.from_pretrained(COMMUNITY, precision="uint8")
    with pytest.raises(ValueError, match="precision must be one of"):
        Florence2.from_pretrained(COMMUNITY, precision="int3")
    assert hub.downloads() == []


def test_gpu_default_prefers_fp16():
    files = community_files("", ["decoder_model_merged"]) + community_files("_fp16", ["decoder_model_merged"])
    assert select(files, None, device="gpu").precision == "fp16"
    assert select(files, None, device="cpu").precision == "fp32"
    assert select(community_files("", ["decoder_model_merged"]), None, device="gpu").precision == "fp32"


# ----------------------------------------------------------------------------- native repositories


def test_native_repository_top_folder(env, hub, tiny_model):
    model = Florence2.from_pretrained(NATIVE)
    top = {f for f in hub.repos[NATIVE].files if not f.startswith("int8/") and f != "README.md"}
    assert sorted(hub.downloads(NATIVE)) == sorted(top)
    assert model.config.precision == "fp32"
    assert _run(model) == _run(tiny_model)


def test_native_repository_variant_folder(env, hub):
    model = Florence2.from_pretrained(NATIVE, precision="int8")
    int8 = {f for f in hub.repos[NATIVE].files if f.startswith("int8/")}
    assert sorted(hub.downloads(NATIVE)) == sorted(
        int8 | {"florence2_config.json"}
    )  # the top one: its precision
    assert model.config.precision == "int8" and model.folder.name == "int8"
    hub.clear()
    again = Florence2.from_pretrained(NATIVE, precision="int8", local_files_only=True)
    assert again.folder == model.folder and hub.log == []
    assert _run(again) == _run(model)


def test_local_folder_precision_is_checked(tiny_folder):
    assert resolve_model(tiny_folder, precision="fp32").folder == tiny_folder
    with pytest.raises(HubError, match="no int8 variant; it has: fp32"):
        Florence2.from_pretrained(tiny_folder, precision="int8")


# ----------------------------------------------------------------------------- errors


def test_missing_repository(env):
    with pytest.raises(HubError, match=r"someone/nothing: no such repository on http://127.0.0.1"):
        Florence2.from_pretrained("someone/nothing")


def test_gated_repository_needs_a_token(env, hub):
    with pytest.raises(HubError, match="someone/gated is a gated repository"):
        Florence2.from_pretrained("someone/gated")
    model = Florence2.from_pretrained("someone/gated", token=TOKEN)
    assert model.config.precision == "fp32"


def test_missing_file(env):
    with pytest.raises(
        HubError, match=r"someone/broken: onnx/decoder_model_merged.onnx is listed but missing"
    ):
        Florence2.from_pretrained("someone/broken")
    with pytest.raises(HubError, match=r"someone/no-tokenizer has no tokenizer.json"):
        Florence2.from_pretrained("someone/no-tokenizer")


def test_unreachable_hub(env):
    with (
        huggingface_hub_at("http://127.0.0.1:9"),
        pytest.raises(HubError, match=r"cannot be reached .* not in the cache"),
    ):
        Florence2.from_pretrained("florence-2-base")


def test_not_florence2(env, hub):
    with pytest.raises(
        HubError,
        match="someone/checkpoint is not a Florence-2 ONNX model: it holds a PyTorch "
        "checkpoint; export it first",
    ):
        Florence2.from_pretrained("someone/checkpoint")
    with pytest.raises(HubError, match="someone/other is not a Florence-2 ONNX model"):
        Florence2.from_pretrained("someone/other")
    assert hub.downloads() == []


def test_not_a_name_at_all(tmp_path):
    with pytest.raises(ModelFileError, match=r"not a folder .* hub repository id"):
        Florence2.from_pretrained(str(tmp_path / "no" / "such" / "folder"))


def test_aliases_name_onnx_community_repositories():
    assert set(ALIASES) == {
        "florence-2-base",
        "florence-2-base-ft",
        "florence-2-large",
        "florence-2-large-ft",
    }
    assert all(repo.startswith("onnx-community/Florence-2-") for repo in ALIASES.values())


def test_server_names_the_model_by_its_hub_name(env, hub):
    from fastapi.testclient import TestClient

    from florence2_runtime.server import create_app

    with TestClient(create_app(Florence2.from_pretrained("florence-2-base"))) as client:
        assert client.get("/health").json()["model"] == "florence-2-base"  # not the snapshot's commit hash


# ----------------------------------------------------------------------------- command line


def _cli(env, *args):
    return subprocess.run(
        [sys.executable, "-m", "florence2_runtime.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_run_by_alias_and_precision(env, hub, tmp_path, local_community):
    image = tmp_path / "a.png"
    _image().save(image)
    out = _cli(
        env,
        "run",
        "florence-2-base",
        str(image),
        "--task",
        "<OD>",
        "--max-new-tokens",
        "12",
        "--precision",
        "int8",
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == _run(local_community)
    assert sorted(hub.downloads(COMMUNITY)) == community_files("_int8", ["decoder_model_merged"])


@pytest.mark.parametrize(
    "model, message",
    [
        ("someone/nothing", "no such repository"),
        ("someone/gated", "gated repository"),
        ("someone/checkpoint", "not a Florence-2 ONNX model"),
    ],
)
def test_cli_hub_errors_are_one_line_exit_2(env, tmp_path, model, message):
    image = tmp_path / "a.png"
    _image().save(image)
    out = _cli(env, "run", model, str(image), "--task", "<OD>")
    assert out.returncode == 2
    assert (
        out.stderr.count("\n") == 1 and message in out.stderr and out.stderr.startswith("florence2: error:")
    )


def test_cli_model_options_reach_every_command():
    from florence2_runtime.cli import build_parser

    for argv in (["run", "m", "i.png", "--task", "<OD>"], ["bench", "m"], ["serve", "m"]):
        args = build_parser().parse_args([*argv, "--precision", "int8", "--revision", "abc"])
        assert (args.precision, args.revision) == ("int8", "abc")
    args = build_parser().parse_args(["compare", "a", "b", "i.png", "--precision-b", "int8"])
    assert (args.precision_a, args.precision_b) == (None, "int8")
