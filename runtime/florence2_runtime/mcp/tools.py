"""The MCP tools: each a method of :class:`Florence2Tools` whose signature is the tool's input schema and
whose return type names its output schema (:class:`~.answers.Answer`).

Every vision tool reads its ``image`` argument (:mod:`.sources`), encodes it once (:mod:`.cache`), runs
one task through the public API (``Florence2.run``; ``detect_objects`` for detection by class names), with
each object's confidence score, and answers the structured result, a one-line summary and, with
``annotate``, the drawn answer as a PNG. ``detect`` takes ``min_score`` (objects scored below it are left
out).
Bad input raises ``ToolError`` (an ``isError`` result naming the argument); the server goes on.

Which tool runs which task is the tables below; :func:`task_table` is the one place that reads the
runtime's task list (``florence2_runtime.tasks.prompts.TASKS``).
"""

from __future__ import annotations

import base64
import io
import threading
from collections.abc import Mapping
from types import MappingProxyType
from typing import Annotated, Literal

from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import CallToolResult, ContentBlock, ImageContent, TextContent
from PIL import Image
from pydantic import Field

from ..cli.run import above_min_score
from ..errors import Florence2Error
from ..model import Florence2
from ..server.images import decode_image
from ..server.problems import RequestError
from ..tasks.prompts import TASKS
from ..tasks.results import Florence2Result
from .answers import Answer, TaskInfo, TaskList, answer_of, summary
from .cache import EncodingCache, image_key
from .settings import McpSettings
from .sources import ImageArgumentError, ImageSource
from .urls import UrlFetcher

__all__ = ["TOOL_NAMES", "Florence2Tools", "task_table"]

CAPTION_TASKS: Mapping[str, str] = MappingProxyType(
    {"brief": "<CAPTION>", "detailed": "<DETAILED_CAPTION>", "paragraph": "<MORE_DETAILED_CAPTION>"}
)
OCR_TASKS: Mapping[bool, str] = MappingProxyType({False: "<OCR>", True: "<OCR_WITH_REGION>"})
REGION_TASKS: Mapping[str, str] = MappingProxyType(
    {"category": "<REGION_TO_CATEGORY>", "description": "<REGION_TO_DESCRIPTION>", "text": "<REGION_TO_OCR>"}
)
DETECT_TASK = "<OD>"
DETECT_CLASSES_TASK = "<OPEN_VOCABULARY_DETECTION>"  # once per class, through Florence2.detect_objects
GROUND_TASK = "<CAPTION_TO_PHRASE_GROUNDING>"
SEGMENT_EXPRESSION_TASK = "<REFERRING_EXPRESSION_SEGMENTATION>"
SEGMENT_REGION_TASK = "<REGION_TO_SEGMENTATION>"

# task -> the tool that runs it most simply (run_task runs every task)
TOOL_OF_TASK: Mapping[str, str] = MappingProxyType(
    {
        **{task: "caption" for task in CAPTION_TASKS.values()},
        **{task: "ocr" for task in OCR_TASKS.values()},
        **{task: "describe_region" for task in REGION_TASKS.values()},
        DETECT_TASK: "detect",
        DETECT_CLASSES_TASK: "detect",
        GROUND_TASK: "ground",
        SEGMENT_EXPRESSION_TASK: "segment",
        SEGMENT_REGION_TASK: "segment",
    }
)
TOOL_NAMES = ("caption", "detect", "ocr", "ground", "segment", "describe_region", "run_task", "list_tasks")

ImageArg = Annotated[
    str,
    Field(
        description="the image: a file path (under the folders this server may read), base64 of the file, "
        "or a data URL (data:image/png;base64,...); http(s) URLs only if the server allows them",
    ),
]
RegionArg = Annotated[
    list[float],
    Field(
        min_length=4,
        max_length=4,
        description="a box [x1, y1, x2, y2] in pixels of the original image (as the other tools answer)",
    ),
]
AnnotateArg = Annotated[
    bool, Field(description="also return the image with the answer drawn on it (PNG), for a person to see")
]
ToolAnswer = Annotated[CallToolResult, Answer]
# characters of a phrase or text input (the prompt must fit the model's ~1000 positions anyway)
MAX_TEXT = 4096
MAX_CLASSES = 100  # class names per detect call (one prompt each)


def task_table() -> list[TaskInfo]:
    """Every task the model runs: token, input (none, text or region), tool, prompt template."""
    return [
        TaskInfo(
            task=task,
            input="region" if spec.region_input else "text" if spec.takes_input else "none",
            tool=TOOL_OF_TASK.get(task, "run_task"),
            prompt=spec.prompt,
        )
        for task, spec in TASKS.items()
    ]


def _task_token(task: str) -> str:
    """``"OD"``, ``"od"`` or ``"<OD>"`` -> ``"<OD>"``, refusing unknown tasks."""
    token = task.strip().upper()
    token = token if token.startswith("<") else f"<{token}>"
    if token not in TASKS:
        raise ToolError(f"task: unknown task {task[:60]!r}; one of {', '.join(TASKS)} (see list_tasks)")
    return token


class Florence2Tools:
    """The tools over one model. fetcher: how URLs are fetched when the settings allow them (tests
    inject one with stub name resolution); None builds the default."""

    def __init__(self, model: Florence2, settings: McpSettings, fetcher: UrlFetcher | None = None):
        self.model = model
        self.settings = settings
        if settings.allow_url and fetcher is None:
            fetcher = UrlFetcher(settings.max_image_bytes, settings.fetch_timeout_s, settings.max_redirects)
        self.source = ImageSource(
            settings.roots, settings.max_image_bytes, fetcher if settings.allow_url else None
        )
        self.cache = EncodingCache(settings.cache_images, settings.cache_bytes)
        self._model_lock = threading.Lock()  # one inference at a time (tools run on worker threads)

    # --- the tools: names, docstrings and signatures are what clients see ---------------------------------
    def caption(
        self,
        image: ImageArg,
        detail: Annotated[
            Literal["brief", "detailed", "paragraph"],
            Field(description="brief: one sentence; detailed: a few; paragraph: a long description"),
        ] = "brief",
        annotate: AnnotateArg = False,
    ) -> ToolAnswer:
        """Describe an image in words (Florence-2 <CAPTION>, <DETAILED_CAPTION>, <MORE_DETAILED_CAPTION>)."""
        return self._answer(image, annotate, CAPTION_TASKS[detail])

    def detect(
        self,
        image: ImageArg,
        classes: Annotated[
            list[str] | None,
            Field(
                max_length=MAX_CLASSES,
                description="names of the things to find (open-vocabulary detection, one pass per "
                "name); leave out to detect every object the model knows (<OD>)",
            ),
        ] = None,
        min_score: Annotated[
            float | None,
            Field(
                ge=0,
                le=1,
                description="leave out the objects whose confidence score is below this (0-1); leave "
                "out to get every object with its score",
            ),
        ] = None,
        annotate: AnnotateArg = False,
    ) -> ToolAnswer:
        """Find objects: labelled boxes in pixels of the original image, each with a confidence score (<OD>,
        or <OPEN_VOCABULARY_DETECTION> once per class name)."""
        if classes:
            if not all(isinstance(c, str) and c.strip() for c in classes):
                raise ToolError("classes: every class name must be a non-empty string")
            return self._answer(image, annotate, DETECT_CLASSES_TASK, classes=classes, min_score=min_score)
        return self._answer(image, annotate, DETECT_TASK, min_score=min_score)

    def ocr(
        self,
        image: ImageArg,
        with_regions: Annotated[
            bool, Field(description="also locate each line of text (four-corner boxes in pixels)")
        ] = False,
        annotate: AnnotateArg = False,
    ) -> ToolAnswer:
        """Read the text in an image (<OCR>, or <OCR_WITH_REGION> with where each line is)."""
        return self._answer(image, annotate, OCR_TASKS[with_regions])

    def ground(
        self,
        image: ImageArg,
        phrase: Annotated[
            str,
            Field(
                max_length=MAX_TEXT, description="a phrase or caption whose parts to locate, e.g. 'a red car'"
            ),
        ],
        annotate: AnnotateArg = False,
    ) -> ToolAnswer:
        """Locate the things a phrase mentions: a box per phrase part (<CAPTION_TO_PHRASE_GROUNDING>)."""
        if not phrase.strip():
            raise ToolError("phrase: give the phrase to locate (it is empty)")
        return self._answer(image, annotate, GROUND_TASK, text=phrase)

    def segment(
        self,
        image: ImageArg,
        expression: Annotated[
            str | None,
            Field(max_length=MAX_TEXT, description="what to segment, in words, e.g. 'the dog on the left'"),
        ] = None,
        region: Annotated[
            list[float] | None,
            Field(min_length=4, max_length=4, description="or a box [x1, y1, x2, y2] in pixels around it"),
        ] = None,
        annotate: AnnotateArg = False,
    ) -> ToolAnswer:
        """Outline one thing as polygons in pixels, named by an expression
        (<REFERRING_EXPRESSION_SEGMENTATION>) or boxed by a region (<REGION_TO_SEGMENTATION>): give one."""
        has_expression = expression is not None and expression.strip() != ""
        if has_expression == (region is not None):
            raise ToolError("expression, region: give exactly one of them")
        if has_expression:
            return self._answer(image, annotate, SEGMENT_EXPRESSION_TASK, text=expression)
        return self._answer(image, annotate, SEGMENT_REGION_TASK, region=region)

    def describe_region(
        self,
        image: ImageArg,
        region: RegionArg,
        what: Annotated[
            Literal["category", "description", "text"],
            Field(description="category: what it is; description: a short caption; text: the text in it"),
        ] = "description",
        annotate: AnnotateArg = False,
    ) -> ToolAnswer:
        """Say what is inside a box of the image (<REGION_TO_CATEGORY>, <REGION_TO_DESCRIPTION>,
        <REGION_TO_OCR>)."""
        return self._answer(image, annotate, REGION_TASKS[what], region=region)

    def run_task(
        self,
        image: ImageArg,
        task: Annotated[
            str, Field(description="a Florence-2 task token, e.g. '<DENSE_REGION_CAPTION>' (list_tasks)")
        ],
        text: Annotated[
            str | None,
            Field(max_length=MAX_TEXT, description="the task's text input, for the tasks that take one"),
        ] = None,
        region: Annotated[
            list[float] | None,
            Field(
                min_length=4,
                max_length=4,
                description="the task's box [x1, y1, x2, y2] in pixels, for region tasks",
            ),
        ] = None,
        annotate: AnnotateArg = False,
    ) -> ToolAnswer:
        """Run any of Florence-2's tasks by its token; raw holds run()'s answer for it."""
        return self._answer(image, annotate, _task_token(task), text=text, region=region)

    def list_tasks(self) -> TaskList:
        """The Florence-2 tasks: token, input (none, text or region), the tool that runs it, prompt."""
        return TaskList(tasks=task_table())

    # --- the work behind them -----------------------------------------------------------------------------
    def _answer(
        self,
        image: str,
        annotate: bool,
        task: str,
        text: str | None = None,
        region: list[float] | None = None,
        classes: list[str] | None = None,
        min_score: float | None = None,
    ) -> CallToolResult:
        data = self._read(image)
        with self._model_lock:
            encoded = self.cache.get_or_encode(
                image_key(data), lambda: self.model.encode_image(self._decode(data))
            )
            try:
                if classes:
                    result = self.model.detect_objects(encoded, classes=classes, scores=True)
                else:
                    answer = self.model.run(encoded, task, text, region, scores=True)
                    result = Florence2Result.from_dict(answer, encoded.image_size)
                result = above_min_score(result, min_score)
            except (ValueError, Florence2Error) as e:
                raise ToolError(str(e)) from None
        structured = answer_of(result)
        content: list[ContentBlock] = [TextContent(type="text", text=summary(structured))]
        if annotate:
            content.append(self._drawing(data, result))
        return CallToolResult(content=content, structured_content=dict(structured))

    def _read(self, image: str) -> bytes:
        try:
            return self.source.read(image)
        except ImageArgumentError as e:
            raise ToolError(str(e)) from None

    def _decode(self, data: bytes) -> Image.Image:
        try:
            return decode_image(data, self.settings.max_pixels)
        except RequestError as e:
            raise ToolError(f"image: {e.message}") from None

    def _drawing(self, data: bytes, result: Florence2Result) -> ImageContent:
        picture = self._decode(data)
        side = self.settings.annotate_max_side
        picture.thumbnail((side, side))  # draw() scales the pixel coordinates to the smaller picture
        buffer = io.BytesIO()
        result.draw(picture).save(buffer, format="PNG")
        return ImageContent(
            type="image", data=base64.b64encode(buffer.getvalue()).decode("ascii"), mime_type="image/png"
        )
