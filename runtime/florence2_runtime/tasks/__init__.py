"""The task layer: Florence-2's tasks from prompt to typed answer.

The task table (:mod:`.table`: one :class:`~.table.TaskSpec` per task token) is read by everything below:
prompts and their checks (:mod:`.prompts`), location tokens (:mod:`.locations`), post-processing as
``Florence2Processor`` does it (:mod:`.postprocess`), task-level generation and batching (:mod:`.batch`),
the per-task methods (:mod:`.methods`), typed results (:mod:`.results`, shapes in :mod:`.shapes`) and their
converters (:mod:`.coco`, :mod:`.supervision`, :mod:`.drawing`, :mod:`.masks`). Works on any model object
with ``Florence2``'s read-only parts (``config``, ``generation_config``, ``tokenizer``, ``engine``).

May import: :mod:`florence2_runtime.errors`, :mod:`florence2_runtime.generation`,
:mod:`florence2_runtime.inputs` (and engine types, for annotations only). This package re-exports the
task table and what the former ``florence2_runtime.tasks`` module offered (now :mod:`.batch`).
"""

from .batch import (
    LENGTH_OPTIONS,
    MAX_BATCH,
    TASK_MAX_NEW_TOKENS,
    PromptItem,
    PromptModel,
    TaskInput,
    answer_prompts,
    decoding_options,
    merge_class_answers,
    task_decoding_options,
    task_generation_kwargs,
    task_items,
    trim_after_eos,
)
from .table import TASKS, TaskSpec

__all__ = [
    "LENGTH_OPTIONS",
    "MAX_BATCH",
    "TASKS",
    "TASK_MAX_NEW_TOKENS",
    "PromptItem",
    "PromptModel",
    "TaskInput",
    "TaskSpec",
    "answer_prompts",
    "decoding_options",
    "merge_class_answers",
    "task_decoding_options",
    "task_generation_kwargs",
    "task_items",
    "trim_after_eos",
]
