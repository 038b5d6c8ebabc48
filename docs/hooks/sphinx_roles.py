"""A griffe extension for the API reference: the docstrings' Sphinx roles as inline code.

The code's docstrings are prose with ``double backticks`` (inline code in Markdown too) and Sphinx roles
(``:class:`Florence2```, ``:func:`~.engine.hub.resolve```), which Markdown would show verbatim. Each role
becomes inline code of its target, shortened to its last name where the role asks so (``~``) or where
the target is relative (``.engine.hub.resolve`` -> ``resolve``). Loaded by mkdocstrings
(``mkdocs.yml``: ``extensions``).
"""

from __future__ import annotations

import re

import griffe

ROLE = re.compile(r":(?:class|func|meth|attr|data|mod|obj|exc|const):`(?P<target>[^`]+)`")


def _code(m: re.Match) -> str:
    target = m["target"].strip()
    if target.startswith("~") or target.startswith("."):
        target = target.lstrip("~").lstrip(".").rsplit(".", 1)[-1]
    return f"``{target}``"


def plain(text: str) -> str:
    """``text`` with every Sphinx role replaced by inline code."""
    return ROLE.sub(_code, text)


class SphinxRoles(griffe.Extension):
    def on_package(self, *, pkg: griffe.Module, **kwargs) -> None:
        todo: list[griffe.Object] = [pkg]
        while todo:
            obj = todo.pop()
            if obj.docstring is not None:
                obj.docstring.value = plain(obj.docstring.value)
            todo.extend(m for m in obj.members.values() if not m.is_alias)  # type: ignore[misc]
