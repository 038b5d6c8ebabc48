"""Request checking shared by every route: generation settings, task input, prompt length.

Task, text and region rules are the library's (``prompts.check_task_input`` / ``build_task_text``), so a
request is valid here exactly when ``Florence2.run`` would accept it; this module only adds the server's
own limits and turns ``ValueError`` into 422 answers.
"""

from __future__ import annotations

import numbers
from typing import Any

from ..decoding import DecodingOptions
from ..prompts import build_task_text, check_task_input, construct_prompt
from ..tasks import TaskInput, task_generation_kwargs, task_items
from .limits import ALLOWED_GENERATION_OPTIONS, ServerLimits
from .problems import invalid

INFER_FIELDS = frozenset({"image", "task", "text", "region", "region_format", "generation", "tasks"})


def check_generation(generation: Any, limits: ServerLimits, model) -> tuple[dict, DecodingOptions]:
    """The ``generation`` object of a request -> (generate() kwargs, resolved DecodingOptions)."""
    if generation is None:
        generation = {}
    if not isinstance(generation, dict):
        raise invalid("invalid_generation", f"generation must be an object, got {type(generation).__name__}")
    unknown = sorted(set(generation) - ALLOWED_GENERATION_OPTIONS)
    if unknown:
        raise invalid("invalid_generation", f"unsupported generation option(s) {', '.join(map(repr, unknown))}; "
                                            f"allowed: {', '.join(sorted(ALLOWED_GENERATION_OPTIONS))}")
    max_tokens = min(limits.max_new_tokens, model.config.max_position_embeddings - 1)
    ranges = {"max_new_tokens": (1, max_tokens), "num_beams": (1, limits.max_num_beams)}
    for name, (low, high) in ranges.items():
        value = generation.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise invalid("invalid_generation", f"generation.{name} must be an integer, got {value!r}")
        if not low <= value <= high:
            raise invalid("invalid_generation", f"generation.{name} must be in [{low}, {high}], got {value}")
    try:  # task-level default: up to 1024 new tokens, capped by the decoder's positions and this server's limit
        defaults = task_generation_kwargs(generation, max_tokens + 1)
        options = model.decoding_options(**defaults)
    except (ValueError, TypeError) as e:
        raise invalid("invalid_generation", f"generation: {e}") from None
    for name, (low, high) in ranges.items():  # the checkpoint's defaults must respect the limits too
        if not low <= getattr(options, name) <= high:
            raise invalid("invalid_generation", f"{name}={getattr(options, name)} (from the model's defaults) is "
                                                f"outside this server's range [{low}, {high}]; set it explicitly")
    return dict(generation), options


def check_task(task: Any, text: Any, region: Any, region_format: Any = "pixels") -> None:
    """Everything about task / text / region that needs no image (422 otherwise)."""
    if task is None:
        raise invalid("missing_field", "'task' is required, e.g. \"<OD>\"")
    try:
        check_task_input(task, text, region, region_format=region_format)
    except (ValueError, TypeError) as e:
        raise invalid("invalid_task_input", str(e)) from None


def check_tasks(tasks: Any, text: Any, region: Any, region_format: Any = "pixels") -> list[TaskInput]:
    """A ``tasks`` list (``"<OD>"`` or ``{"task", "text"?, "region"?}`` entries) -> checked TaskInputs (422 otherwise).

    ``tasks`` replaces ``task`` / ``text`` / ``region``: each entry carries its own input."""
    if text is not None or region is not None:
        raise invalid("invalid_task_input", "with 'tasks', give each task's text or region in its own entry "
                                            "({\"task\": ..., \"text\": ...}), not at the top level")
    if not isinstance(tasks, list):
        raise invalid("invalid_task_input", f"'tasks' must be a list of task tokens or {{task, text, region}} "
                                            f"objects, got {type(tasks).__name__}")
    if any(not isinstance(t, (str, dict)) for t in tasks):
        raise invalid("invalid_task_input", "every entry of 'tasks' must be a task token or a {task, text, region} object")
    try:
        return task_items(tasks, region_format)
    except (ValueError, TypeError) as e:
        raise invalid("invalid_task_input", str(e)) from None


def build_prompt(task: str, text: str | None, region: Any, region_format: str, image_size: tuple[int, int],
                 model) -> str:
    """The processor text for an image of ``image_size``; also refuses prompts longer than the encoder takes."""
    try:
        prompt = build_task_text(task, text=text, region=region, image_size=image_size, region_format=region_format)
    except (ValueError, TypeError) as e:
        raise invalid("invalid_task_input", str(e)) from None
    cfg = model.config
    built = construct_prompt(prompt, cfg.task_prompts_without_inputs, cfg.task_prompts_with_input)
    ids, _ = model.tokenizer.encode_prompts([built])
    room = cfg.max_position_embeddings - cfg.num_image_tokens
    if ids.shape[1] > room:
        raise invalid("text_too_long", f"the prompt is {ids.shape[1]} tokens; this model takes at most {room} "
                                       "next to the image")
    return prompt
