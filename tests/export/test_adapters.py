"""PEFT adapters merged at export: the export's tokens equal transformers + peft (adapter unmerged), in both
adapter layouts, with and without modules_to_save, one adapter or two; bad adapters are refused clearly."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

peft = pytest.importorskip("peft")

from florence2_export.checkpoints.adapters import AdapterError, merge_adapters, resolve_adapter
from florence2_runtime import Florence2
from florence2_runtime.engine.config import RuntimeConfig
from florence2_runtime.inputs.image_size import ImageSize
from tests.helpers.images import make_test_image
from tests.helpers.original_layout import write_original_adapter, write_original_checkpoint

# short names as users write them: peft matches them by suffix (in the original layout too)
TARGETS = ["q_proj", "v_proj", "out_proj", "fc1", "qkv"]
MAESTRO_TARGETS = ["q_proj", "o_proj", "k_proj", "v_proj", "linear", "Conv2d", "lm_head", "fc2"]
TEXTS = ["<OD>", "<CAPTION_TO_PHRASE_GROUNDING>a red car", "<MORE_DETAILED_CAPTION>", "<OCR>"]
SIZES = [(160, 120), (33, 200), (90, 90), (128, 64)]


def _base(checkpoint):
    from transformers import Florence2ForConditionalGeneration

    return Florence2ForConditionalGeneration.from_pretrained(
        checkpoint, attn_implementation="eager", dtype=torch.float32
    ).eval()


def write_adapter(checkpoint, out, seed: int, scale: float = 0.5, **lora):
    """A LoRA adapter on ``checkpoint`` with random non-zero ``lora_B`` (``lora_embedding_A`` for embeddings; peft starts those at zero) and random modules_to_save copies.

    Everything is drawn from ``seed``: peft draws ``lora_A`` from torch's global generator, which is seeded
    here, so the adapter does not depend on what ran before it."""
    torch.manual_seed(seed)
    model = peft.get_peft_model(_base(checkpoint), peft.LoraConfig(**lora))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if any(k in name for k in ("lora_B", "lora_embedding_A", "modules_to_save")):
                p.copy_(torch.randn(p.shape, generator=g) * scale)
    model.save_pretrained(str(out))
    return out


def peft_reference(checkpoint, adapters, hf_processor, images, texts, **kwargs) -> np.ndarray:
    """transformers + peft: every adapter but the last merged by peft, the last one left unmerged."""
    model = _base(checkpoint)
    for i, adapter in enumerate(adapters):
        model = peft.PeftModel.from_pretrained(model, str(adapter)).eval()
        if i < len(adapters) - 1:
            model = model.merge_and_unload()
    batch = hf_processor(text=texts, images=images, return_tensors="pt", padding=True)
    with torch.no_grad():
        return model.generate(**batch, **kwargs).numpy()


@pytest.fixture(scope="module")
def vocab(hf_model):
    return hf_model.config.image_token_id  # the original layout's vocabulary ends before <image>


@pytest.fixture(scope="module")
def adapters(tiny_checkpoint, tmp_path_factory, vocab):
    """native/original x plain/with-head adapters, and the original checkpoint they are based on."""
    root = tmp_path_factory.mktemp("adapters")
    original_checkpoint = write_original_checkpoint(tiny_checkpoint, root / "original-checkpoint")
    # LoRA on lm_head, whose weight is the token embeddings' (tied), as maestro's Florence-2 config has it
    plain = write_adapter(
        tiny_checkpoint, root / "plain", seed=1, r=4, lora_alpha=8, target_modules=TARGETS + ["lm_head"]
    )
    head = write_adapter(
        tiny_checkpoint,
        root / "head",
        seed=2,
        r=8,
        lora_alpha=4,
        use_rslora=True,
        bias="lora_only",
        target_modules=TARGETS + ["fc2", "k_proj"],
        modules_to_save=["lm_head"],
        rank_pattern={"fc2": 2},
        alpha_pattern={"k_proj": 16},
    )
    # maestro's Florence-2 LoRA config (names that match nothing here, such as o_proj, are skipped by peft)
    second = write_adapter(
        tiny_checkpoint,
        root / "second",
        seed=3,
        r=8,
        lora_alpha=8,
        lora_dropout=0.05,
        task_type="CAUSAL_LM",
        target_modules=MAESTRO_TARGETS,
    )
    return {
        "original_checkpoint": original_checkpoint,
        "plain": plain,
        "head": head,
        "second": second,
        "original-plain": write_original_adapter(
            plain, root / "original-plain", vocab, base=original_checkpoint
        ),
        "original-head": write_original_adapter(
            head, root / "original-head", vocab, base=original_checkpoint
        ),
    }


def _export(src, out, adapter):
    from florence2_export import export

    export(src, out, adapter=adapter, quiet=True)
    return out


@pytest.mark.parity
@pytest.mark.slow
@pytest.mark.parametrize(
    "case, base, chain",
    [
        ("native", "native", ["plain"]),
        ("native-head", "native", ["head"]),
        ("original", None, ["original-plain"]),  # BASE omitted: the adapter's base_model_name_or_path
        ("original-head", "original", ["original-head"]),
        ("two", "native", ["original-head", "second"]),
    ],
)
def test_export_with_adapters_matches_peft(
    case, base, chain, adapters, tiny_checkpoint, onnx_model, hf_processor, tmp_path, capsys
):
    src = {"native": tiny_checkpoint, "original": adapters["original_checkpoint"], None: None}[base]
    out = tmp_path / case
    if src is None:  # through the CLI: florence2 export OUT --adapter ADAPTER
        from florence2_runtime.cli import main

        assert main(["export", str(out), *[f"--adapter={adapters[a]}" for a in chain]]) == 0
        summary = capsys.readouterr().err
        assert f"merged LORA adapter {adapters[chain[0]]}" in summary and "FAILED" not in summary
    else:
        _export(src, out, [adapters[a] for a in chain])
    model = Florence2.from_pretrained(out)
    # the reference always takes the native adapters on the native checkpoint (peft cannot run remote code)
    reference = [adapters[a.replace("original-", "")] for a in chain]
    images = [make_test_image(w, h, seed=i) for i, (w, h) in enumerate(SIZES)]
    differs = False
    for num_beams in (1, 3):
        kwargs = dict(max_new_tokens=20, num_beams=num_beams)
        got = model.generate(images, TEXTS, **kwargs)
        np.testing.assert_array_equal(
            got, peft_reference(tiny_checkpoint, reference, hf_processor, images, TEXTS, **kwargs)
        )
        base_ids = onnx_model.generate(images, TEXTS, **kwargs)
        differs |= got.shape != base_ids.shape or bool((got != base_ids).any())
    assert differs, "the adapter had no effect on the exported model"
    recorded = RuntimeConfig.load(out).adapters
    assert [r["name"] for r in recorded] == [str(adapters[a]) for a in chain]
    assert all(r["peft_type"] == "LORA" and len(r["sha256"]) == 64 for r in recorded)


@pytest.mark.slow
@pytest.mark.parity
@pytest.mark.parametrize(
    "config",
    [
        dict(peft_type="LORA", r=4, use_dora=True, target_modules=["q_proj", "fc1", "qkv"]),
        dict(peft_type="LOHA", r=4, target_modules=["q_proj", "v_proj"], init_weights=False),
    ],
    ids=["dora", "loha"],
)
def test_other_mergeable_adapters_match_peft(config, tiny_checkpoint, hf_processor, tmp_path):
    """DoRA and LoHa merge exactly: the merged model (what the graphs are checked against) gives peft's tokens."""
    config = dict(config)
    kind = config.pop("peft_type")
    if kind == "LORA":
        folder = write_adapter(tiny_checkpoint, tmp_path / "adapter", seed=5, **config)
    else:
        folder = tmp_path / "adapter"
        peft.get_peft_model(_base(tiny_checkpoint), peft.LoHaConfig(**config)).save_pretrained(str(folder))
    merged = _merge(tiny_checkpoint, folder)
    images = [make_test_image(w, h, seed=i) for i, (w, h) in enumerate(SIZES)]
    batch = hf_processor(text=TEXTS, images=images, return_tensors="pt", padding=True)
    with torch.no_grad():
        got = merged.generate(**batch, max_new_tokens=20, num_beams=3).numpy()
        base = _base(tiny_checkpoint).generate(**batch, max_new_tokens=20, num_beams=3).numpy()
    expected = peft_reference(
        tiny_checkpoint, [folder], hf_processor, images, TEXTS, max_new_tokens=20, num_beams=3
    )
    np.testing.assert_array_equal(got, expected)
    assert got.shape != base.shape or (got != base).any()


def test_original_target_names_map_to_the_native_modules(hf_model):
    """'proj' and 'dw' name different modules in the two layouts (convs.{i}.proj is native convs.{i}.conv)."""
    from florence2_export.checkpoints.original_adapter import to_native

    config = peft.LoraConfig(r=2, target_modules=["proj", "dw"], modules_to_save=["lm_head"])
    native, _ = to_native(config, {}, hf_model, "test")
    targets = set(native.target_modules)
    assert "model.vision_tower.convs.0.conv" in targets
    assert "model.vision_tower.blocks.0.0.spatial_block.window_attn.proj" in targets
    assert "model.vision_tower.blocks.0.0.channel_block.conv2" in targets
    assert not any("language_model" in t for t in targets)  # BART's out_proj does not end in '.proj'
    assert native.modules_to_save == ["lm_head"]
    config = peft.LoraConfig(
        r=2,
        target_modules=["q_proj"],
        layers_to_transform=[1],
        layers_pattern="layers",
        exclude_modules=r".*encoder_attn.*",
    )
    native, _ = to_native(config, {}, hf_model, "test")
    assert native.target_modules == [
        f"model.language_model.{part}.layers.1.self_attn.q_proj" for part in ("decoder", "encoder")
    ]
    assert native.layers_to_transform is None and native.exclude_modules is None


@pytest.mark.slow
def test_original_adapter_merges_to_the_same_weights(adapters, tiny_checkpoint, hf_model):
    from florence2_export.checkpoints.loading import load_checkpoint

    native = _merge(tiny_checkpoint, adapters["head"])
    original_base, _ = load_checkpoint(adapters["original_checkpoint"])
    original = merge_adapters(
        original_base, [resolve_adapter(adapters["original-head"])], *_sizes(tiny_checkpoint)
    )
    rows = hf_model.config.image_token_id
    a, b = native.state_dict(), original.state_dict()
    assert set(a) == set(b)
    for name in a:
        if (
            a[name].shape
            and a[name].shape[0] > rows
            and ("embed" in name or "shared" in name or "lm_head" in name)
        ):
            torch.testing.assert_close(a[name][:rows], b[name][:rows], rtol=0, atol=1e-6, msg=name)
        else:
            torch.testing.assert_close(a[name], b[name], rtol=0, atol=1e-6, msg=name)


# ----------------------------------------------------------------------------- refusals


def _edit(folder, tmp_path, config=None, tensors=None):
    """A copy of an adapter folder with its config and/or tensors edited."""
    import shutil

    from safetensors.torch import load_file, save_file

    out = tmp_path / "edited"
    shutil.copytree(folder, out)
    if config is not None:
        d = json.loads((out / "adapter_config.json").read_text())
        config(d)
        (out / "adapter_config.json").write_text(json.dumps(d))
    if tensors is not None:
        t = load_file(str(out / "adapter_model.safetensors"))
        tensors(t)
        save_file(t, str(out / "adapter_model.safetensors"))
    return out


def _sizes(checkpoint):
    """(image size, image token count) of a checkpoint, from its processor."""
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(checkpoint)
    size = processor.image_processor.size
    return ImageSize(width=size["width"], height=size["height"]), processor.num_image_tokens


def _merge(checkpoint, folder):
    return merge_adapters(_base(checkpoint), [resolve_adapter(folder)], *_sizes(checkpoint))


def test_unmappable_original_tensor_is_named(adapters, tiny_checkpoint, tmp_path):
    key = "base_model.model.vision_tower.head.lora_A.weight"
    folder = _edit(
        adapters["original-plain"], tmp_path, tensors=lambda t: t.__setitem__(key, torch.zeros(4, 8))
    )
    with pytest.raises(AdapterError, match=r"vision_tower\.head\.lora_A\.weight.*no native counterpart"):
        _merge(tiny_checkpoint, folder)


def test_original_targets_matching_nothing_are_refused(adapters, tiny_checkpoint, tmp_path):
    folder = _edit(
        adapters["original-plain"], tmp_path, config=lambda d: d.update(target_modules=["no_such_module"])
    )
    with pytest.raises(AdapterError, match="no_such_module"):
        _merge(tiny_checkpoint, folder)


def test_adapter_for_another_model_is_refused(adapters, tiny_checkpoint, tmp_path):
    def widen(t):
        name = next(k for k in t if k.endswith("q_proj.lora_A.weight"))
        t[name] = torch.zeros(t[name].shape[0], t[name].shape[1] + 3)

    folder = _edit(adapters["plain"], tmp_path, tensors=widen)
    with pytest.raises(AdapterError, match=r"q_proj\.lora_A\.weight has shape"):
        _merge(tiny_checkpoint, folder)


def test_prompt_learning_adapter_is_refused(tiny_checkpoint, tmp_path):
    from safetensors.torch import save_file

    folder = tmp_path / "prompt"
    folder.mkdir()
    (folder / "adapter_config.json").write_text(
        json.dumps(
            {
                "peft_type": "PROMPT_TUNING",
                "task_type": "SEQ_2_SEQ_LM",
                "num_virtual_tokens": 4,
                "token_dim": 32,
                "num_transformer_submodules": 1,
                "num_attention_heads": 4,
                "num_layers": 2,
            }
        )
    )
    save_file({"prompt_embeddings": torch.zeros(4, 32)}, str(folder / "adapter_model.safetensors"))
    with pytest.raises(AdapterError, match=r"PROMPT_TUNING.*prompt-learning"):
        _merge(tiny_checkpoint, folder)


def test_split_embedding_tables_are_refused(tiny_checkpoint, tmp_path):
    """modules_to_save=["embed_tokens"] retrains the decoder's table but not the prompt's (shared): one table
    cannot hold both."""
    folder = write_adapter(
        tiny_checkpoint,
        tmp_path / "emb",
        seed=4,
        r=2,
        target_modules=["q_proj"],
        modules_to_save=["embed_tokens"],
    )
    with pytest.raises(AdapterError, match="embedding table"):
        _merge(tiny_checkpoint, folder)


def test_lora_on_tied_embeddings_is_refused(tiny_checkpoint, tmp_path):
    """LoRA on embed_tokens adapts the decoder's token lookup, not the prompt's (shared): two tables."""
    folder = write_adapter(tiny_checkpoint, tmp_path / "emb", seed=6, r=2, target_modules=["embed_tokens"])
    with pytest.raises(AdapterError, match="embedding table"):
        _merge(tiny_checkpoint, folder)


def test_hub_adapter_offline_is_one_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(AdapterError, match="not-a/real-adapter: the hub is not reachable"):
        resolve_adapter("not-a/real-adapter")


def test_missing_or_wrong_folders_are_refused(tiny_checkpoint, tmp_path):
    with pytest.raises(AdapterError, match=r"not a PEFT adapter folder.*give it as BASE"):
        resolve_adapter(tiny_checkpoint)
    with pytest.raises(AdapterError, match="no such folder"):
        resolve_adapter(tmp_path / "nothing")
    (tmp_path / "nobase").mkdir()
    (tmp_path / "nobase" / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    from florence2_export.checkpoints.adapters import base_of

    with pytest.raises(AdapterError, match="base_model_name_or_path"):
        base_of(resolve_adapter(tmp_path / "nobase"))


def test_cli_reports_a_bad_adapter_in_one_line(tiny_checkpoint, tmp_path, capsys):
    from florence2_runtime.cli import main

    assert (
        main(["export", str(tiny_checkpoint), str(tmp_path / "out"), "--adapter", str(tmp_path / "nope")])
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert err.startswith("florence2: error: adapter") and "no such folder" in err and "\n" not in err
    assert main(["export", str(tmp_path / "out")]) == 2
    assert "src" in capsys.readouterr().err
