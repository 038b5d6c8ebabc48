"""Request checking shared by every route: generation settings, task input, prompt length.

Task, text and region rules are the library's (``prompts.check_task_input`` / ``build_task_text``), so a
request is valid here exactly when ``Florence2.run`` would accept it; this module only adds the server's
own limits and turns ``ValueError`` into 422 answers.
"""

from __future__ import annotations

import numbers
from typing import Any

from ..errors import brief
from ..generation import DecodingOptions
from ..tasks.prompts import build_task_text, check_task_input, construct_prompt
from ..tasks.requests import TaskInput, task_generation_kwargs, task_items
from .problems import invalid
from .settings import ServerLimits

# generation options a request may set (transformers' names); everything else is rejected with 422
ALLOWED_GENERATION_OPTIONS = frozenset(
    {
        "max_new_tokens",
        "min_new_tokens",
        "num_beams",
        "no_repeat_ngram_size",
        "length_penalty",
        "early_stopping",
    }
)
INFER_FIELDS = frozenset({"image", "task", "text", "region", "region_format", "generation", "tasks"})


def check_generation(generation: Any, limits: ServerLimits, model) -> tuple[dict, DecodingOptions]:
    """The ``generation`` object of a request -> (generate() kwargs, resolved DecodingOptions)."""
    if generation is None:
        generation = {}
    if not isinstance(generation, dict):
        raise invalid("invalid_generation", f"generation must be an object, got {type(generation).__name__}")
    unknown = sorted(set(generation) - ALLOWED_GENERATION_OPTIONS)
    if unknown:
        raise invalid(
            "invalid_generation",
            f"unsupported generation option(s) {brief_names(unknown)}; "
            f"allowed: {', '.join(sorted(ALLOWED_GENERATION_OPTIONS))}",
        )
    max_tokens = min(limits.max_new_tokens, model.config.max_position_embeddings - 1)
    ranges = {"max_new_tokens": (1, max_tokens), "num_beams": (1, limits.max_num_beams)}
    for name, (low, high) in ranges.items():
        value = generation.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise invalid("invalid_generation", f"generation.{name} must be an integer, got {brief(value)}")
        if not low <= int(value) <= high:
            raise invalid(
                "invalid_generation", f"generation.{name} must be in [{low}, {high}], got {brief(value)}"
            )
    try:  # task-level default: up to 1024 new tokens, capped by the decoder's positions and this server's limit
        defaults = task_generation_kwargs(generation, max_tokens + 1)
        options = model.decoding_options(**defaults)
    except (ValueError, TypeError) as e:
        named = any(
            str(e).startswith(n) for n in generation
        )  # "length_penalty must be ..." -> generation.length_...
        raise invalid("invalid_generation", f"generation{'.' if named else ': '}{e}") from None
    for name, (low, high) in ranges.items():  # the checkpoint's defaults must respect the limits too
        if not low <= getattr(options, name) <= high:
            raise invalid(
                "invalid_generation",
                f"generation.{name}={getattr(options, name)} (from the model's defaults) is "
                f"outside this server's range [{low}, {high}]; set it explicitly",
            )
    return dict(generation), options


def brief_names(names: list[str], most: int = 8) -> str:
    """Field names for a message: each cut short, at most ``most`` of them."""
    shown = ", ".join(brief(n, 40) for n in names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


def check_task(
    task: Any, text: Any, region: Any, region_format: Any = "pixels", max_text_bytes: int | None = None
) -> None:
    """Everything about task / text / region that needs no image (422 otherwise).

    ``text`` is bounded by ``max_text_bytes`` (UTF-8) first: nothing longer is ever tokenised."""
    if task is None:
        raise invalid("missing_field", "'task' is required, e.g. \"<OD>\"")
    if max_text_bytes is not None and isinstance(text, str):
        check_text_size(text, max_text_bytes)
    try:
        check_task_input(task, text, region, region_format=region_format)
    except (ValueError, TypeError) as e:
        raise invalid("invalid_task_input", str(e)) from None


def check_tasks(
    tasks: Any, text: Any, region: Any, region_format: Any = "pixels", max_text_bytes: int | None = None
) -> list[TaskInput]:
    """A ``tasks`` list (``"<OD>"`` or ``{"task", "text"?, "region"?}`` entries) -> checked TaskInputs (422 otherwise).

    ``tasks`` replaces ``task`` / ``text`` / ``region``: each entry carries its own input."""
    if text is not None or region is not None:
        raise invalid(
            "invalid_task_input",
            "with 'tasks', give each task's text or region in its own entry "
            '({"task": ..., "text": ...}), not at the top level',
        )
    if not isinstance(tasks, list):
        raise invalid(
            "invalid_task_input",
            f"'tasks' must be a list of task tokens or {{task, text, region}} "
            f"objects, got {type(tasks).__name__}",
        )
    if any(not isinstance(t, (str, dict)) for t in tasks):
        raise invalid(
            "invalid_task_input",
            "every entry of 'tasks' must be a task token or a {task, text, region} object",
        )
    if max_text_bytes is not None:  # every entry's text is bounded before anything is tokenised
        for entry in tasks:
            if isinstance(entry, dict) and isinstance(entry.get("text"), str):
                check_text_size(entry["text"], max_text_bytes)
    try:
        return task_items(tasks, region_format)
    except (ValueError, TypeError) as e:
        raise invalid("invalid_task_input", str(e)) from None


def check_text_size(text: str, max_text_bytes: int) -> None:
    """422 when ``text`` is over ``max_text_bytes`` in UTF-8 (a character is at least one byte: long strings
    are refused without encoding them)."""
    size = len(text) if len(text) > max_text_bytes else len(text.encode("utf-8", "surrogatepass"))
    if size > max_text_bytes:
        raise invalid(
            "text_too_long",
            f"text is {'at least ' if len(text) > max_text_bytes else ''}{size} bytes; "
            f"this server takes at most {max_text_bytes} (UTF-8)",
        )


def build_prompt(
    task: str, text: str | None, region: Any, region_format: str, image_size: tuple[int, int], model
) -> str:
    """The processor text for an image of ``image_size``; also refuses prompts longer than the encoder takes."""
    try:
        prompt = build_task_text(
            task, text=text, region=region, image_size=image_size, region_format=region_format
        )
    except (ValueError, TypeError) as e:
        raise invalid("invalid_task_input", str(e)) from None
    cfg = model.config
    built = construct_prompt(prompt, cfg.task_prompts_without_inputs, cfg.task_prompts_with_input)
    ids, _ = model.tokenizer.encode_prompts([built])
    room = cfg.max_position_embeddings - cfg.num_image_tokens
    if ids.shape[1] > room:
        raise invalid(
            "text_too_long",
            f"text: the prompt is {ids.shape[1]} tokens; this model takes at most {room} next to the image",
        )
    return prompt
