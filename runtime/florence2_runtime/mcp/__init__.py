"""Florence-2 as tools for AI agents: an MCP server (the ``mcp`` extra; ``florence2 mcp MODEL``).

    from florence2_runtime.mcp.app import create_server
    from florence2_runtime.mcp.tools import Florence2Tools
    create_server(Florence2Tools(Florence2.from_pretrained("model"), McpSettings())).run("stdio")

Tools (:mod:`.tools`): caption, detect, ocr, ground, segment, describe_region, run_task, list_tasks; each
with a JSON schema for its arguments and a structured answer in pixels of the original image
(:mod:`.answers`). Inputs are read safely (:mod:`.sources`: paths under allowed roots, base64, data URLs;
:mod:`.urls`: public http(s) addresses only, when allowed); each image is encoded once (:mod:`.cache`).
The ``mcp`` sub-command (:mod:`.cli`) serves them over stdio or streamable HTTP (:mod:`.app`).

Importing this package, :mod:`.settings`, :mod:`.urls`, :mod:`.sources`, :mod:`.cache` or :mod:`.cli`
needs no MCP SDK; :mod:`.tools` and :mod:`.app` import it (``mcp``: the SDK, never this package, which is
``florence2_runtime.mcp``).

The top layer, beside :mod:`florence2_runtime.server`. May import every layer below it (errors,
generation, inputs, engine, tasks, model, the package's ``__version__``, cli's argparse types) and
:mod:`florence2_runtime.server`'s image decoding and API-key option (``server.images``,
``server.problems``, ``server.cli``); nothing imports it but ``cli.command``, lazily.
"""

from __future__ import annotations

from .settings import McpSettings

__all__ = ["McpSettings"]
