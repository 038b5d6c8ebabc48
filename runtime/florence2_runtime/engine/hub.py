"""Model names -> local model folders: a folder, a hub repository id or a short alias (no torch, no transformers).

A repository is in one of the two layouts (:mod:`.layouts`): onnx-community (transformers' json files,
``onnx/`` graphs whose suffix names the precision: ``_fp16``, ``_int8``, ...; none: fp32) or native (what
``florence2 export`` writes, at the top and optionally in variant folders named by precision: ``int8/``).
huggingface_hub does the hub work, with its own settings (``HF_ENDPOINT``, ``HF_HUB_OFFLINE``,
``HF_HUB_CACHE``: read when it is imported), cache and errors: the repository's file list (offline, or with
no answer from the hub, the tree listing cached by the last download) -> :func:`select` (which follows the
graph declarations of :mod:`.graphs`, hence this layer) -> ``snapshot_download(allow_patterns=...)``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from ..errors import Florence2Error, ModelFileError, require
from .config import CONFIG_FILE, GENERATION_CONFIG_FILE, TOKENIZER_FILE
from .graphs import (
    COMMUNITY_DECODERS,
    COMMUNITY_ENCODERS,
    LAYOUT_MARKERS,
    ONNX_DIR,
    PRECISION_SUFFIXES,
    graph_file_candidates,
)

ALIASES: dict[str, str] = {
    "florence-2-base": "onnx-community/Florence-2-base",
    "florence-2-base-ft": "onnx-community/Florence-2-base-ft",
    "florence-2-large": "onnx-community/Florence-2-large",
    "florence-2-large-ft": "onnx-community/Florence-2-large-ft",
}
"""Short names accepted wherever a MODEL is: each an onnx-community repository (fp32 plus its variants)."""

PRECISIONS = tuple(s.lstrip("_") or "fp32" for s in PRECISION_SUFFIXES)  # fp32, fp16, quantized, int8, ...
PRECISION_ALIASES = {"q8": "quantized"}  # transformers.js' dtype name for the ``_quantized`` files
DEFAULT_PRECISIONS = {"cpu": ("fp32",), "gpu": ("fp16", "fp32")}  # preferred when precision=None
COMMUNITY_FILES = ("config.json", GENERATION_CONFIG_FILE, "preprocessor_config.json", TOKENIZER_FILE)
COMMUNITY_OPTIONAL = ("processor_config.json",)  # banned grounding phrases, where a repository has them
NATIVE_FILES = (CONFIG_FILE, TOKENIZER_FILE, GENERATION_CONFIG_FILE)
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_NO_HUB = "the hub is not reachable or disabled (HF_HUB_OFFLINE / local_files_only)"


class HubError(Florence2Error, ValueError):
    """A model could not be had from the hub (or its cache); the message names the repository and why."""


@dataclass(frozen=True)
class Selection:
    """What to load from a repository or folder: files relative to its root, the model folder within it."""

    precision: str  # fp32, fp16, int8, ... (native: the variant folder's name, or the top folder's precision)
    subfolder: str  # "" or "int8" (native variant folders)
    files: tuple[str, ...]


@dataclass(frozen=True)
class ResolvedModel:
    """A model name resolved to a local folder. precision: the onnx-community suffix to insist on, or the
    native folder's precision; None for a local folder loaded as it is. files: those fetched from the hub."""

    folder: Path
    precision: str | None
    files: tuple[str, ...] = ()


# ----------------------------------------------------------------------------- pure selection


def normalize_precision(precision: str | None) -> str | None:
    """``"FP16"`` -> ``"fp16"``, ``"q8"`` -> ``"quantized"``; ValueError for an unknown name."""
    if precision is None:
        return None
    p = PRECISION_ALIASES.get(precision.lower().lstrip("_"), precision.lower().lstrip("_"))
    if p not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)} (or q8); got {precision!r}")
    return p


def community_variants(files: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """{precision: the ``onnx/`` files it needs (one decoder form, merged preferred, and the graphs' external
    data files)} for every complete precision of an onnx-community listing, in :data:`PRECISIONS` order."""
    files = set(files)
    out = {}
    for precision, suffix in zip(PRECISIONS, PRECISION_SUFFIXES):
        encoders = _named(COMMUNITY_ENCODERS, suffix)
        decoder = next((f for f in (_named(d, suffix) for d in COMMUNITY_DECODERS) if set(f) <= files), None)
        if decoder is not None and set(encoders) <= files:
            graphs = [*encoders, *decoder]
            out[precision] = tuple(f for g in graphs for f in (g, *sorted(_data_files(files, g))))
    return out


def _named(graphs: Iterable[str], suffix: str) -> list[str]:
    """``vision_encoder.onnx`` -> ``onnx/vision_encoder_int8.onnx`` for ``suffix="_int8"``."""
    return [f"{ONNX_DIR}/{g.removesuffix('.onnx')}{suffix}.onnx" for g in graphs]


def _data_files(files: set[str], graph: str) -> list[str]:
    """The external-data files of ``graph`` in a listing (``x.onnx_data``, ``x.onnx_data_1``, ``x.onnx.data``)."""
    return [f for f in files if f.startswith(graph + "_data") or f == graph + ".data"]


def _has_marker(files: set[str], layout: str, folder: str = "") -> bool:
    prefix = f"{folder}/{ONNX_DIR}/" if folder else f"{ONNX_DIR}/"
    return any(
        prefix + name in files for marker in LAYOUT_MARKERS[layout] for name in graph_file_candidates(marker)
    )


def native_folders(files: Iterable[str]) -> list[str]:
    """The model folders of a native listing: ``""`` (top) and sub-folders, each with ``florence2_config.json``
    and a native graph in its ``onnx/``."""
    files = set(files)
    tops = {f.removesuffix(CONFIG_FILE).rstrip("/") for f in files if f.split("/")[-1] == CONFIG_FILE}
    return sorted(t for t in tops if t.count("/") == 0 and _has_marker(files, "native", t))


def detect_listing_layout(files: Iterable[str]) -> str | None:
    """The layout of a repository from its file list (the markers of :func:`graphs.detect_layout`), or None."""
    files = set(files)
    if _has_marker(files, "onnx-community"):
        return "onnx-community"
    return "native" if native_folders(files) else None


def native_files(files: Iterable[str], subfolder: str) -> tuple[str, ...]:
    """The files of the native model folder ``subfolder`` (``""``: the top one): its json, tokenizer and onnx/."""
    files = set(files)
    prefix = f"{subfolder}/" if subfolder else ""
    wanted = [prefix + n for n in NATIVE_FILES if prefix + n in files]
    onnx = f"{prefix}{ONNX_DIR}/"
    return (*wanted, *sorted(f for f in files if f.startswith(onnx) and "/" not in f[len(onnx) :]))


def _pick(available: Sequence[str], precision: str | None, device: str, where: str) -> str:
    if precision is not None:
        if precision not in available:
            raise HubError(f"{where} has no {precision} variant; it has: {', '.join(available)}")
        return precision
    return next((p for p in DEFAULT_PRECISIONS[device] if p in available), available[0])


def select(
    files: Iterable[str],
    precision: str | None,
    *,
    device: str = "cpu",
    where: str = "the repository",
    top_precision: str | None = None,
) -> Selection:
    """The files to fetch from a repository listing for ``precision`` (None: fp32 on the CPU, fp16 then fp32 on a
    GPU, else the first variant present). top_precision: the precision of a native repository's top folder
    (its ``florence2_config.json``); None if it has none. Raises :class:`HubError` naming what is missing."""
    files, precision = set(files), normalize_precision(precision)
    layout = detect_listing_layout(files)
    if layout == "onnx-community":
        variants, missing = community_variants(files), [n for n in COMMUNITY_FILES if n not in files]
        if not variants:
            raise HubError(
                f"{where} is in the onnx-community layout but has no complete set of graphs "
                f"(onnx/{', onnx/'.join(COMMUNITY_ENCODERS)} and a decoder) in any precision"
            )
        if missing:
            raise HubError(f"{where} has no {', '.join(missing)} (an onnx-community model needs it)")
        chosen = _pick(list(variants), precision, device, where)
        extra = tuple(n for n in COMMUNITY_OPTIONAL if n in files)
        return Selection(chosen, "", (*COMMUNITY_FILES, *extra, *variants[chosen]))
    if layout is None:
        raise HubError(f"{where} is not a Florence-2 ONNX model: {_not_florence2_hint(files)}")
    named: dict[str, str] = {}  # precision -> folder: a variant folder's name, the top one's config
    for sub in native_folders(files):  # "" (the top folder) first: it wins a clash of names
        named.setdefault(sub or top_precision or "fp32", sub)
    chosen = _pick(list(named), precision, device, where)
    sub = named[chosen]
    top_config = (CONFIG_FILE,) if sub and "" in named.values() else ()  # read for the top folder's precision
    return Selection(chosen, sub, (*top_config, *native_files(files, sub)))


def _not_florence2_hint(files: set[str]) -> str:
    if "config.json" in files and any(f.endswith((".safetensors", ".bin")) for f in files):
        return "it holds a PyTorch checkpoint; export it first with 'florence2 export REPO OUT' (the 'export' extra)"
    shown = ", ".join(sorted(files)[:6]) + (", ..." if len(files) > 6 else "")
    return (
        f"neither onnx/{LAYOUT_MARKERS['onnx-community'][0]} (onnx-community layout) nor {CONFIG_FILE} with "
        f"onnx/{LAYOUT_MARKERS['native'][0]} (a 'florence2 export' folder) is there (files: {shown or 'none'})"
    )


# ----------------------------------------------------------------------------- names


def repo_id_of(name: str) -> str | None:
    """The hub repository a name stands for (an alias or ``owner/name``), or None if it is neither."""
    if name.lower() in ALIASES:
        return ALIASES[name.lower()]
    return name if _REPO_ID.match(name) and ".." not in name else None


def _read_precision(path: Path) -> str:
    try:
        return str(json.loads(path.read_text(encoding="utf-8")).get("precision", "fp32"))
    except (OSError, ValueError, AttributeError):
        return "fp32"


def resolve_local(folder: Path, precision: str | None) -> ResolvedModel:
    """A local model folder; with ``precision``, a native variant sub-folder or a check that it is there."""
    precision = normalize_precision(precision)
    if precision is None:
        return ResolvedModel(folder, None)
    files = [p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()]
    top = _read_precision(folder / CONFIG_FILE) if (folder / CONFIG_FILE).is_file() else None
    sel = select(files, precision, where=str(folder), top_precision=top)
    return ResolvedModel(folder / sel.subfolder if sel.subfolder else folder, sel.precision)


def resolve_model(
    name_or_path: str | Path,
    *,
    precision: str | None = None,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    local_files_only: bool | None = None,
    token: str | bool | None = None,
    device: str = "cpu",
) -> ResolvedModel:
    """A local folder, a hub repository id or an alias (:data:`ALIASES`) -> the local model folder to load.

    device: ``"cpu"`` or ``"gpu"`` (the default precision: fp32, or fp16 where the repository has it).
    local_files_only: None follows ``HF_HUB_OFFLINE``. Raises :class:`HubError` / :class:`ModelFileError`.
    """
    path = Path(name_or_path)
    if path.is_dir():
        return resolve_local(path, precision)
    repo_id = repo_id_of(str(name_or_path))
    if repo_id is None:
        raise ModelFileError(
            path,
            "not a folder (expected a model folder written by 'florence2 export'), a hub "
            f"repository id (owner/name) or one of {', '.join(ALIASES)}",
        )
    normalize_precision(precision)  # a bad name fails before any network call
    require("huggingface_hub", "cpu", f"Loading {str(name_or_path)!r} from the hub")
    from httpx2 import HTTPError  # huggingface_hub's HTTP client
    from huggingface_hub import constants, errors, is_offline_mode, snapshot_download

    what = repo_id if str(name_or_path) == repo_id else f"{repo_id} ({name_or_path})"
    where = f"{what} at revision {revision}" if revision else what
    cache = str(cache_dir or constants.HF_HUB_CACHE)
    offline = is_offline_mode() if local_files_only is None else bool(local_files_only)
    try:
        files, offline = _listing(repo_id, revision, cache_dir, token, offline, f"{where}: ", cache)

        def fetch(patterns: list[str]) -> Path:
            folder = snapshot_download(
                repo_id, revision=revision, cache_dir=cache_dir, token=token, local_files_only=offline,
                allow_patterns=patterns,
            )  # fmt: skip
            return Path(folder)

        top = None
        if detect_listing_layout(files) == "native" and CONFIG_FILE in files:
            top = _read_precision(fetch([CONFIG_FILE]) / CONFIG_FILE)
        sel = select(files, precision, device=device, where=where, top_precision=top)
        try:
            folder = fetch(list(sel.files))
        except errors.IncompleteSnapshotError as e:
            missing = [f for f in sel.files if not (Path(e.snapshot_path) / f).is_file()]
            names = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
            raise HubError(f"{where}: {names} not in the cache ({cache}) and {_NO_HUB}") from None
    except (OSError, HTTPError) as e:  # huggingface_hub's errors are OSErrors; httpx2's, HTTPErrors
        raise _hub_error(e, what, where, revision, cache) from None
    sub = folder / sel.subfolder if sel.subfolder else folder
    return ResolvedModel(sub, sel.precision, sel.files)


def _listing(repo_id: str, revision, cache_dir, token, offline: bool, where: str, cache: str):
    """(the repository's files, offline): from the hub, or offline (or with no answer from the hub, which
    then counts as offline) as the tree listing cached by the last download saw them, so that the default
    precision is the one online."""
    from huggingface_hub import HfApi, constants, errors, get_cached_repo_tree

    reason = "offline (HF_HUB_OFFLINE=1 or local_files_only=True)"
    if not offline:
        try:
            info = HfApi(token=token).model_info(repo_id, revision=revision)
            return [s.rfilename for s in info.siblings or []], False
        except _unreachable() as e:
            reason = f"the hub at {constants.ENDPOINT} cannot be reached ({type(e).__name__})"
    try:
        tree = get_cached_repo_tree(repo_id, revision=revision, cache_dir=cache_dir)
    except errors.CachedRepoTreeNotFoundError:
        raise HubError(f"{where}{reason}, and it is not in the cache ({cache})") from None
    return [f.path for f in tree], True


def _unreachable() -> tuple[type[Exception], ...]:
    """What huggingface_hub itself takes for "no answer from the hub" (``snapshot_download`` falls back then)."""
    from httpx2 import ConnectError, TimeoutException
    from huggingface_hub.errors import OfflineModeIsEnabled

    return ConnectError, TimeoutException, OfflineModeIsEnabled


def _hub_error(e: Exception, what: str, where: str, revision: str | None, cache: str) -> HubError:
    """One HubError naming the repository for what huggingface_hub raised: the first class that fits."""
    from huggingface_hub import constants, errors

    answers: list[tuple[type[Exception] | tuple[type[Exception], ...], str]] = [
        (errors.GatedRepoError, f"{what} is a gated repository: accept its terms on the hub and pass "
         "a token (token=..., HF_TOKEN, or 'hf auth login')"),
        (errors.RepositoryNotFoundError, f"{what}: no such repository on {constants.ENDPOINT} and no "
         "such local folder (a private repository needs a token)"),
        (errors.RevisionNotFoundError, f"{what}: revision {revision!r} not found"),
        (errors.RemoteEntryNotFoundError, f"{where}: {_requested_file(e)} is listed but missing on the hub"),
        (errors.LocalEntryNotFoundError, f"{where}: not (completely) in the cache ({cache}) and {_NO_HUB}"),
        (_unreachable(), f"{where}: the hub at {constants.ENDPOINT} cannot be reached ({type(e).__name__})"),
        (errors.HfHubHTTPError, f"{where}: the hub answered {_first_line(e)}"),
    ]  # fmt: skip
    fallback = f"{where}: {type(e).__name__}: {_first_line(e)}"
    return HubError(next((message for kind, message in answers if isinstance(e, kind)), fallback))


def _requested_file(e: Exception) -> str:
    """The repository path of the file a failed ``.../resolve/REV/PATH`` request asked for."""
    url = str(getattr(getattr(e, "response", None), "url", "") or "")
    return unquote(url.split("/resolve/", 1)[1].split("/", 1)[-1]) if "/resolve/" in url else "a file"


def _first_line(e: Exception) -> str:
    return next((line for line in str(e).splitlines() if line.strip()), type(e).__name__)
