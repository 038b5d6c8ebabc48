"""The task layer: Florence-2's tasks from prompt to typed answer.

The task table (:mod:`.table`: one :class:`~.table.TaskSpec` per task token) is read by everything below:
prompts and their checks (:mod:`.prompts`), location tokens (:mod:`.locations`), post-processing as
``Florence2Processor`` does it (:mod:`.postprocess`), task-level generation and batching (:mod:`.batch`),
the per-task methods (:mod:`.methods`), typed results (:mod:`.results`, shapes in :mod:`.shapes`) and their
converters (:mod:`.coco`, :mod:`.supervision`, :mod:`.drawing`, :mod:`.masks`). Works on any model object
with ``Florence2``'s read-only parts (``config``, ``generation_config``, ``tokenizer``, ``engine``).

May import: :mod:`florence2_runtime.errors`, :mod:`florence2_runtime.generation`,
:mod:`florence2_runtime.inputs` (and engine types, for annotations only).
"""
