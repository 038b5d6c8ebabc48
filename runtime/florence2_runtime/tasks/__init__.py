"""The task layer: Florence-2's tasks from prompt to typed answer.

Prompts and their checks (:mod:`.prompts`), post-processing as ``Florence2Processor`` does it
(:mod:`.postprocess`), task-level generation (:mod:`.batch`), the per-task methods (:mod:`.methods`),
typed results (:mod:`.results`, shapes in :mod:`.shapes`) and their converters (:mod:`.coco`,
:mod:`.supervision`, :mod:`.drawing`, :mod:`.masks`). Works on any model object with ``generate_encoded``
/ ``decode`` / ``config``: it never imports the engine.

May import: :mod:`florence2_runtime.errors`, :mod:`florence2_runtime.generation`,
:mod:`florence2_runtime.inputs`. This package re-exports what the former ``florence2_runtime.tasks`` module
offered (now :mod:`.batch`).
"""

from .batch import (
    LENGTH_OPTIONS,
    MAX_BATCH,
    TASK_MAX_NEW_TOKENS,
    PromptItem,
    TaskInput,
    answer_prompts,
    merge_class_answers,
    task_generation_kwargs,
    task_items,
    trim_after_eos,
)

__all__ = [
    "LENGTH_OPTIONS",
    "MAX_BATCH",
    "TASK_MAX_NEW_TOKENS",
    "PromptItem",
    "TaskInput",
    "answer_prompts",
    "merge_class_answers",
    "task_generation_kwargs",
    "task_items",
    "trim_after_eos",
]
