"""An input for every task, read off the task table: what tests pass to ``run`` / ``predict`` per task."""

from __future__ import annotations

from typing import Any

from florence2_runtime.tasks.table import TASKS

TEXT = "a red ball on a table"
REGION = (10, 12, 90, 70)  # pixels of a 128 x 96 or larger image
INPUTS: dict[str, dict[str, Any]] = {"none": {}, "text": {"text": TEXT}, "region": {"region": REGION}}
TASK_INPUTS: dict[str, dict[str, Any]] = {token: INPUTS[spec.input] for token, spec in TASKS.items()}
