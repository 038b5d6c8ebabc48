"""Precision variants (int8, fp16) of the tiny export and ``florence2 compare``."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from florence2_export.precision import attention_score_nodes, convert_folder, gemm_to_matmul
from florence2_runtime import Florence2
from florence2_runtime.cli import main
from florence2_runtime.cli.compare import CompareOptions, compare_models
from florence2_runtime.engine.config import RuntimeConfig
from florence2_runtime.tasks.batch import task_decoding_options
from tests.helpers.images import make_test_image

GRAPHS = ("vision_encoder", "text_encoder", "decoder")
TASKS = {"<OD>": {}, "<CAPTION_TO_PHRASE_GROUNDING>": {"text": "a red ball"}, "<CAPTION>": {}}


@pytest.fixture(scope="module")
def int8_export(tiny_checkpoint, tmp_path_factory):
    """The tiny checkpoint exported with ``dtype="int8"`` (the PyTorch check of the variant included)."""
    from florence2_export import export

    out = tmp_path_factory.mktemp("int8") / "model"
    return export(tiny_checkpoint, out, dtype="int8", quiet=True)


@pytest.fixture(scope="module")
def fp16_folder(onnx_folder, tmp_path_factory):
    """The fp32 tiny export converted to fp16 without PyTorch."""
    out = tmp_path_factory.mktemp("fp16") / "model"
    convert_folder(onnx_folder, out, "fp16")
    return out


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("compare-images")
    for i, (w, h) in enumerate([(120, 90), (64, 100)]):
        make_test_image(w, h, seed=20 + i).save(folder / f"im{i}.png")
    (folder / "notes.txt").write_text("not an image")
    return folder


def _folder(request, name):
    return {
        "int8": lambda: request.getfixturevalue("int8_export").folder,
        "fp16": lambda: request.getfixturevalue("fp16_folder"),
    }[name]()


def test_int8_export_is_checked_per_graph(int8_export):
    assert int8_export.ok and int8_export.dtype == "int8"
    assert set(int8_export.variant_errors) == set(GRAPHS)
    for diff, ref in int8_export.variant_errors.values():
        assert 0 < diff <= int8_export.variant_tolerance * ref  # quantised: close, but not identical
    assert "check int8 decoder" in int8_export.summary()
    cfg = RuntimeConfig.load(int8_export.folder)
    assert (cfg.precision, cfg.int8_recipe) == ("int8", "7bit")  # the default: right on every CPU
    assert int8_export.variant_problems == []  # the weights are 7-bit: the same check on every machine


@pytest.mark.parametrize("dtype", ["int8", "fp16"])
@pytest.mark.parametrize("task", list(TASKS))
def test_variant_runs_tasks(request, onnx_model, dtype, task):
    model = Florence2.from_pretrained(_folder(request, dtype))
    assert model.config.precision == dtype
    image = make_test_image(140, 100, seed=3)
    got = model.run(image, task, max_new_tokens=16, num_beams=2, **TASKS[task])
    expected = onnx_model.run(image, task, max_new_tokens=16, num_beams=2, **TASKS[task])
    assert list(got) == [task] and type(got[task]) is type(expected[task])
    if isinstance(expected[task], dict):
        assert got[task].keys() == expected[task].keys()


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(model)
    g = inferred.graph
    types = {v.name: v.type.tensor_type.elem_type for v in (*g.value_info, *g.input, *g.output)}
    types.update({t.name: t.data_type for t in g.initializer})
    return types


@pytest.mark.parametrize("graph", GRAPHS)
def test_fp16_graphs_keep_float32_io_and_normalisation(fp16_folder, onnx_folder, graph):
    model = onnx.load(str(fp16_folder / "onnx" / f"{graph}.onnx"))
    reference = onnx.load(str(onnx_folder / "onnx" / f"{graph}.onnx"))

    def io(m):
        return [(v.name, v.type.tensor_type.elem_type) for v in (*m.graph.input, *m.graph.output)]

    assert io(model) == io(reference)  # same names, float32 stays float32
    types = _elem_types(model)
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer)  # converted at all
    fp32_ops = [n for n in model.graph.node if n.op_type in ("LayerNormalization", "Softmax")]
    assert fp32_ops
    for node in fp32_ops:
        assert types[node.input[0]] == onnx.TensorProto.FLOAT, node.name
        assert types[node.output[0]] == onnx.TensorProto.FLOAT, node.name
    if graph == "vision_encoder":  # attention scores before scaling stay float32 (DaViT channel attention)
        blocked = set(attention_score_nodes(reference))
        assert blocked
        for node in model.graph.node:
            if node.name in blocked:
                assert types[node.output[0]] == onnx.TensorProto.FLOAT, node.name


def test_int8_graphs_are_quantised(int8_export):
    for graph in GRAPHS:
        ops = {n.op_type for n in onnx.load(str(int8_export.folder / "onnx" / f"{graph}.onnx")).graph.node}
        assert "MatMulInteger" in ops and "DynamicQuantizeLinear" in ops, graph
        assert "Gemm" not in ops  # the decoder's lm_head is quantised too


@pytest.mark.parametrize("dtype", ["int8", "fp16"])
def test_variants_add_no_control_flow(request, dtype):
    """TensorRT wants no If/Loop on the per-token path; the conversions must not add any."""
    folder = _folder(request, dtype)
    for graph in GRAPHS:
        ops = {n.op_type for n in onnx.load(str(folder / "onnx" / f"{graph}.onnx")).graph.node}
        assert not ops & {"If", "Loop", "Scan"}, (dtype, graph)


def test_gemm_to_matmul_keeps_outputs():
    """Format-1 decoders hold the tied lm_head as Gemm(h, table, transB=1); int8 rewrites it as a MatMul."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    table = rng.standard_normal((50, 8)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["h", "table"], ["logits"], transB=1)],
        "lm_head",
        [helper.make_tensor_value_info("h", TensorProto.FLOAT, ["rows", 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["rows", 50])],
        [numpy_helper.from_array(table, "table")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    h = rng.standard_normal((3, 8)).astype(np.float32)

    def run(m):
        return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(
            None, {"h": h}
        )[0]

    expected = run(model)
    assert gemm_to_matmul(model) == 1
    assert [n.op_type for n in model.graph.node] == ["MatMul"]
    assert [t.name for t in model.graph.initializer] == ["table.T"]  # the table had no other user
    np.testing.assert_allclose(run(model), expected, rtol=1e-6, atol=1e-6)


def test_convert_folder_rejects_bad_requests(onnx_folder, fp16_folder, tmp_path):
    with pytest.raises(ValueError, match="dtype"):
        convert_folder(onnx_folder, tmp_path / "x", "bf16")
    with pytest.raises(ValueError, match="fp16"):
        convert_folder(fp16_folder, tmp_path / "y", "int8")  # variants are made from fp32 graphs
    with pytest.raises(FileExistsError):
        convert_folder(onnx_folder, fp16_folder, "fp16")


def test_old_configs_load_as_fp32(onnx_folder):
    d = RuntimeConfig.load(onnx_folder).to_dict()
    del d["precision"]
    assert RuntimeConfig.from_dict(d).precision == "fp32"


def test_compare_with_itself_agrees_fully(onnx_folder, image_dir):
    report = compare_models(
        onnx_folder, onnx_folder, [image_dir], CompareOptions(task="<OD>", max_new_tokens=12)
    )
    s = report.summary()
    assert s["images"] == 2
    assert s["exact_match_rate"] == s["token_agreement"] == s["result_equal_rate"] == 1.0
    for name in ("vision_features", "cross_kv", "first_logits"):
        assert s[name]["max_abs"] == 0.0 and s[name]["ref_max_abs"] > 0


def test_compare_compares_full_answers_by_default(onnx_folder, onnx_model, image_dir):
    """Without --tokens both models answer in full, as ``run`` does (up to 1024 new tokens, capped by the
    positions), not the generation config's 20: differences after token 20 count. The random-weight tiny
    model does not stop early on this image, so its answer runs past 20 tokens."""
    report = compare_models(onnx_folder, onnx_folder, [image_dir / "im0.png"])
    full = task_decoding_options(onnx_model).max_new_tokens
    assert full > 20 and 20 < len(report.images[0].tokens_a) <= full


def test_compare_fp32_with_int8_reports_numbers(onnx_folder, int8_export, image_dir, capsys):
    code = main(
        [
            "compare",
            str(onnx_folder),
            str(int8_export.folder),
            str(image_dir / "im0.png"),
            str(image_dir / "im1.png"),
            "--task",
            "<CAPTION>",
            "--tokens",
            "10",
            "--beams",
            "2",
            "--json",
        ]
    )
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["precision_a"], report["precision_b"]) == ("fp32", "int8")
    s = report["summary"]
    assert 0.0 <= s["token_agreement"] <= 1.0 and 0.0 <= s["exact_match_rate"] <= 1.0
    for name in ("vision_features", "cross_kv", "first_logits"):
        assert 0 < s[name]["max_abs"] < s[name]["ref_max_abs"]
    assert [im["length_a"] > 0 for im in report["images"]] == [True, True]
    assert main(["compare", str(onnx_folder), str(int8_export.folder), str(image_dir), "--tokens", "4"]) == 0
    assert "token agreement" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args, words",
    [
        (["compare", "{model}", "{model}"], "required"),
        (["compare", "{model}", "{model}", "missing.png"], "missing.png"),
        (["compare", "{model}", "{model}", "{empty}"], "no image files"),
        (["compare", "{model}", "{model}", "{image}", "--tokens", "0"], "--tokens must be >= 1"),
        (
            [
                "compare",
                "{model}",
                "{model}",
                "{image}",
                "--task",
                "<REGION_TO_CATEGORY>",
                "--region",
                "0,0,0.5,1",
            ],
            "pass --region-format normalized",
        ),
        (["compare", "{model}", "{model}", "{image}", "--beams", "x"], "--beams"),
        (["compare", "{model}", "{empty}", "{image}"], "florence2_config.json"),
        (["export", "src", "out", "--dtype", "bf16"], "--dtype"),
    ],
)
def test_cli_bad_arguments_exit_2(onnx_folder, image_dir, tmp_path, capsys, args, words):
    values = {"model": str(onnx_folder), "image": str(image_dir / "im0.png"), "empty": str(tmp_path)}
    code = main([a.format(**values) for a in args])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and words in err


def test_fused_fp32_folder_gives_the_same_tokens(onnx_folder, onnx_model, tmp_path):
    """The optional onnxruntime transformer-optimizer fusions keep the tokens (they are off by default)."""
    cfg = convert_folder(onnx_folder, tmp_path / "fused", "fp32", fuse=True)
    assert cfg.precision == "fp32"
    ops = {n.op_type for n in onnx.load(str(tmp_path / "fused" / "onnx" / "decoder.onnx")).graph.node}
    assert "SkipLayerNormalization" in ops
    fused = Florence2.from_pretrained(tmp_path / "fused")
    images = [make_test_image(90, 70, seed=5), make_test_image(70, 90, seed=6)]
    texts = ["<MORE_DETAILED_CAPTION>", "<OD>"]
    np.testing.assert_array_equal(
        fused.generate(images, texts, max_new_tokens=20, num_beams=3),
        onnx_model.generate(images, texts, max_new_tokens=20, num_beams=3),
    )


@pytest.mark.gpu
def test_fp16_on_cuda_stays_close_to_fp32(onnx_folder, fp16_folder, image_dir):
    """fp16 is meant for GPUs: its divergence from fp32 there (skipped without CUDAExecutionProvider)."""
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("needs onnxruntime-gpu with CUDAExecutionProvider and an NVIDIA GPU")
    report = compare_models(
        onnx_folder,
        fp16_folder,
        [image_dir],
        CompareOptions(task="<OD>", max_new_tokens=16),
        providers="cuda",
    )
    s = report.summary()
    for name in ("vision_features", "cross_kv", "first_logits"):
        assert s[name]["max_abs"] <= 0.01 * s[name]["ref_max_abs"], name
    model = Florence2.from_pretrained(fp16_folder, providers="cuda")  # the IO-binding path, fp32 I/O
    assert "<OD>" in model.run(image_dir / "im0.png", "<OD>", max_new_tokens=16)


@pytest.mark.parametrize("dtype", ["int8", "fp16"])
def test_variant_io_binding_path_matches_host_path(request, dtype):
    """The device-side (IO binding) path runs variants unchanged: their inputs/outputs are float32.

    One image per call: the host path runs the CPU's vision encoder one image at a time, the device path
    the whole batch, and dynamic int8 quantises activations with one scale per tensor, so a batch of two
    images is not computed like two single images (a near-tie of the random weights then flips a token)."""
    folder = _folder(request, dtype)
    host = Florence2.from_pretrained(folder, io_binding=False)
    bound = Florence2.from_pretrained(folder, io_binding=True)
    for image, text in (
        (make_test_image(90, 70, seed=7), "<OD>"),
        (make_test_image(70, 90, seed=8), "<CAPTION>"),
    ):
        np.testing.assert_array_equal(
            bound.generate([image], [text], max_new_tokens=12, num_beams=3),
            host.generate([image], [text], max_new_tokens=12, num_beams=3),
        )


@pytest.mark.gpu
def test_fp16_agrees_with_fp32_on_cuda(onnx_model, fp16_folder):
    """Greedy tokens of the fp16 variant on CUDA agree with fp32's on the CPU (skipped without CUDA)."""
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("needs onnxruntime-gpu with CUDAExecutionProvider and an NVIDIA GPU")
    images = [make_test_image(w, h, seed=i) for i, (w, h) in enumerate([(160, 120), (40, 200), (128, 128)])]
    texts = ["<OD>", "<CAPTION_TO_PHRASE_GROUNDING>a red ball", "<MORE_DETAILED_CAPTION>"]
    fp16 = Florence2.from_pretrained(fp16_folder, providers="cuda")
    kwargs = dict(max_new_tokens=24, num_beams=1)
    a = onnx_model.generate(images, texts, **kwargs)
    b = fp16.generate(images, texts, **kwargs)
    agreement = float(np.mean(a == b)) if a.shape == b.shape else 0.0
    print(f"fp16 vs fp32 token agreement on CUDA: {agreement:.3f}")
    assert agreement >= 0.9
