"""Temporary: the old name of :mod:`.batch`, kept only because ``server/`` (being rewritten on its own branch)
still imports it. Remove this file when the server rewrite is merged (issue #24)."""

from .batch import PromptItem, TaskInput, answer_prompts, task_generation_kwargs, task_items

__all__ = ["PromptItem", "TaskInput", "answer_prompts", "task_generation_kwargs", "task_items"]
