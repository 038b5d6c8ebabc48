"""Confidence scores in ``florence2 mcp``'s answers (issue #25): ``scores`` and ``text_score`` in the structured
answer, each score in the summary line, and ``detect``'s ``min_score``; through the SDK's in-process client
on the trained toy model. (Every tool's answer with its scores equals ``run(..., scores=True)``'s:
``test_mcp.py``.)"""

from __future__ import annotations

import anyio
import numpy as np
import pytest

pytest.importorskip("mcp")

from mcp import Client

from florence2_export.toy.shapes import make_shapes_scene
from florence2_runtime import Florence2Result
from florence2_runtime.mcp.app import create_server
from florence2_runtime.mcp.settings import McpSettings
from florence2_runtime.mcp.tools import Florence2Tools
from florence2_runtime.tasks.confidence import drop_below


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mcp-scores")
    make_shapes_scene(np.random.default_rng(3), size=160).image.save(folder / "shapes.png")
    return folder


def call(shapes_model, root, calls: list[tuple[str, dict]]) -> list:
    """Each (tool, arguments) through the SDK's client, in one session."""
    server = create_server(Florence2Tools(shapes_model, McpSettings(roots=(root,))))

    async def session():
        async with Client(server) as client:
            return [await client.call_tool(name, arguments) for name, arguments in calls]

    return anyio.run(session)


def test_answers_carry_scores_and_detect_filters_by_min_score(shapes_model, root):
    image = str(root / "shapes.png")
    run = shapes_model.run(image, "<OD>", scores=True)["<OD>"]
    scores = run["scores"]
    assert len(set(scores)) > 1, run  # the threshold below must split the objects
    threshold = sorted(scores)[len(scores) // 2]
    everything, kept, caption, too_high = call(
        shapes_model,
        root,
        [
            ("detect", {"image": "shapes.png"}),
            ("detect", {"image": "shapes.png", "min_score": threshold}),
            ("caption", {"image": "shapes.png"}),
            ("detect", {"image": "shapes.png", "min_score": 1.5}),
        ],
    )
    answer = everything.structured_content
    assert answer["scores"] == scores and [b["score"] for b in answer["boxes"]] == scores
    line = everything.content[0].text
    assert all(f"score {s:.2f}" in line for s in scores), line

    filtered = kept.structured_content
    want = Florence2Result.from_answer("<OD>", run, (160, 160)).above(threshold)
    assert filtered["scores"] == list(want.scores) and all(s >= threshold for s in filtered["scores"])
    assert 0 < len(filtered["boxes"]) < len(answer["boxes"])
    assert filtered["raw"] == {"<OD>": drop_below(run, threshold)}  # raw agrees with the boxes

    text = caption.structured_content
    want_text = shapes_model.run(image, "<CAPTION>", scores=True)["<CAPTION>"]
    assert (text["text"], text["text_score"], text["scores"]) == (want_text["text"], want_text["scores"], [])
    assert f"score {want_text['scores']:.2f}" in caption.content[0].text

    assert too_high.is_error and "min_score" in too_high.content[0].text


def test_output_schema_documents_scores(shapes_model, root):
    server = create_server(Florence2Tools(shapes_model, McpSettings(roots=(root,))))

    async def tools():
        async with Client(server) as client:
            return {t.name: t for t in (await client.list_tools()).tools}

    detect = anyio.run(tools)["detect"]
    assert {"scores", "text_score"} <= set(detect.output_schema["properties"])
    assert not {"scores", "text_score"} & set(detect.output_schema.get("required", []))
    assert detect.input_schema["properties"]["min_score"]["anyOf"][0]["maximum"] == 1
