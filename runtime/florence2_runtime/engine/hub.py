"""Model names -> local model folders: a folder, a hub repository id or a short alias (no torch, no transformers).

In the engine layer because which files to fetch follows from the graph declarations (:mod:`.graphs`).

A hub repository is in one of the two layouts (:mod:`florence2_runtime.engine.layouts`):

=================  ===========================================================  =================================
layout             repository                                                   precision variants
=================  ===========================================================  =================================
onnx-community     ``config.json``, ``preprocessor_config.json``, tokenizer,      suffixes of the graph files in
                   ``onnx/`` (``onnx-community/Florence-2-*``, ``--layout        ``onnx/``: ``_fp16``, ``_int8``,
                   onnx-community`` exports)                                     ``_q4``, ... (plain = fp32)
native             a folder written by ``florence2 export`` at the top           the top folder (its
                   (``florence2_config.json``, ``tokenizer.json``, ``onnx/``)     ``florence2_config.json`` says
                                                                                 which), plus optional sub-folders
                                                                                 named by precision (``int8/``)
=================  ===========================================================  =================================

Only the files the chosen layout and precision need are downloaded (``huggingface_hub.snapshot_download``
with the exact file list, into the standard HF cache, with its progress bar): for onnx-community repos the
runtime's json/tokenizer files and one decoder form (``decoder_model_merged`` if present, else
``decoder_model`` + ``decoder_with_past_model``) of the chosen precision, with their external-data files.

Offline (``HF_HUB_OFFLINE=1`` or ``local_files_only=True``), or when the hub cannot be reached, the same
selection is made from the files of the cached snapshot, without any network call.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from ..errors import Florence2Error, ModelFileError, require
from .config import CONFIG_FILE, GENERATION_CONFIG_FILE, TOKENIZER_FILE
from .graphs import LAYOUT_MARKERS, PRECISION_SUFFIXES, graph_file_candidates

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

ONNX_DIR = "onnx"
COMMUNITY_GRAPHS = ("vision_encoder.onnx", "embed_tokens.onnx", "encoder_model.onnx")
COMMUNITY_DECODERS = (("decoder_model_merged.onnx",), ("decoder_model.onnx", "decoder_with_past_model.onnx"))
COMMUNITY_FILES = (
    "config.json",
    GENERATION_CONFIG_FILE,
    "preprocessor_config.json",
    TOKENIZER_FILE,
)  # required
COMMUNITY_OPTIONAL = ("processor_config.json",)  # banned grounding phrases, where a repository has them
NATIVE_FILES = (CONFIG_FILE, TOKENIZER_FILE, GENERATION_CONFIG_FILE)
CHECKPOINT_WEIGHTS = (".safetensors", ".bin")
MODEL_HELP = "model folder, hub repository id (owner/name) or alias (" + ", ".join(ALIASES) + ")"
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class HubError(Florence2Error, ValueError):
    """A model could not be had from the hub (or its cache); the message names the repository and why."""


@dataclass(frozen=True)
class Selection:
    """What to load from a repository or folder: files relative to its root, the model folder within it."""

    layout: str  # "native" or "onnx-community"
    precision: str  # fp32, fp16, int8, ... (native: the variant folder's name, or the top folder's precision)
    subfolder: str  # "" or "int8" (native variant folders)
    files: tuple[str, ...]


@dataclass(frozen=True)
class ResolvedModel:
    """A model name resolved to a local folder. precision: the onnx-community suffix to insist on, or the
    native folder's precision; None for a local folder loaded as it is."""

    folder: Path
    precision: str | None
    repo_id: str | None = None
    revision: str | None = None
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


def _suffix(precision: str) -> str:
    return "" if precision == "fp32" else f"_{precision}"


def _with_data(files: set[str], names: Iterable[str]) -> list[str]:
    """``names`` plus their external-data files present in ``files`` (``x.onnx_data``, ``x.onnx_data_1``)."""
    out = []
    for name in names:
        out.append(name)
        out += sorted(f for f in files if f.startswith(name + "_data") or f == name + ".data")
    return out


def community_variants(files: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """{precision: the ``onnx/`` graph files it needs (one decoder form, merged preferred)} for every complete
    precision of an onnx-community listing, in :data:`PRECISIONS` order."""
    files = set(files)
    out = {}
    for precision in PRECISIONS:
        s = _suffix(precision)
        named = lambda n, s=s: f"{ONNX_DIR}/{n.removesuffix('.onnx')}{s}.onnx"  # noqa: E731
        if not all(named(n) in files for n in COMMUNITY_GRAPHS):
            continue
        decoder = next((form for form in COMMUNITY_DECODERS if all(named(n) in files for n in form)), None)
        if decoder is not None:
            out[precision] = tuple(_with_data(files, [named(n) for n in (*COMMUNITY_GRAPHS, *decoder)]))
    return out


def detect_listing_layout(files: Iterable[str]) -> str | None:
    """The layout of a repository from its file list (the same markers as :func:`graphs.detect_layout`, plus a
    top-level or one-folder-deep ``florence2_config.json`` for native repos), or None."""
    files = set(files)
    for layout, markers in LAYOUT_MARKERS.items():
        for marker in markers:
            for name in graph_file_candidates(marker):
                if f"{ONNX_DIR}/{name}" in files or (
                    layout == "native"
                    and any(f.endswith(f"/{ONNX_DIR}/{name}") and f.count("/") == 2 for f in files)
                ):
                    return layout
    return None


def native_folders(files: Iterable[str]) -> list[str]:
    """The model folders of a native listing: ``""`` (top) and sub-folders holding ``florence2_config.json``."""
    files = set(files)
    subs = sorted(f.split("/")[0] for f in files if f.count("/") == 1 and f.endswith("/" + CONFIG_FILE))
    return ([""] if CONFIG_FILE in files else []) + subs


def native_files(files: Iterable[str], subfolder: str) -> tuple[str, ...]:
    """The files of the native model folder ``subfolder`` (``""``: the top one): its json, tokenizer and onnx/."""
    files = set(files)
    prefix = f"{subfolder}/" if subfolder else ""
    wanted = [prefix + n for n in NATIVE_FILES if prefix + n in files]
    wanted += sorted(
        f for f in files if f.startswith(f"{prefix}{ONNX_DIR}/") and f.count("/") == prefix.count("/") + 1
    )
    return tuple(wanted)


def _pick(available: Sequence[str], precision: str | None, device: str, where: str) -> str:
    if precision is not None:
        if precision not in available:
            raise HubError(f"{where} has no {precision} variant; it has: {', '.join(available)}")
        return precision
    preferred = next((p for p in DEFAULT_PRECISIONS[device] if p in available), None)
    return preferred or available[0]


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
    files = set(files)
    precision = normalize_precision(precision)
    layout = detect_listing_layout(files)
    if layout == "onnx-community":
        variants = community_variants(files)
        missing = [n for n in COMMUNITY_FILES if n not in files]
        if not variants:
            raise HubError(
                f"{where} is in the onnx-community layout but has no complete set of graphs "
                f"(onnx/{', onnx/'.join(COMMUNITY_GRAPHS)} and a decoder) in any precision"
            )
        if missing:
            raise HubError(f"{where} has no {', '.join(missing)} (an onnx-community model needs it)")
        chosen = _pick(list(variants), precision, device, where)
        extra = [n for n in COMMUNITY_OPTIONAL if n in files]
        return Selection(layout, chosen, "", (*COMMUNITY_FILES, *extra, *variants[chosen]))
    folders = native_folders(files) if layout == "native" else []
    if not folders:
        raise HubError(f"{where} is not a Florence-2 ONNX model: {_not_florence2_hint(files)}")
    named = {sub: sub for sub in folders if sub}  # variant folders are named by precision
    if "" in folders:
        named = {
            top_precision or "fp32": "",
            **{k: v for k, v in named.items() if k != (top_precision or "fp32")},
        }
    chosen = _pick(list(named), precision, device, where)
    sub = named[chosen]
    top_config = (CONFIG_FILE,) if sub and "" in folders else ()  # read for the top folder's precision
    return Selection("native", chosen, sub, (*top_config, *native_files(files, sub)))


def _not_florence2_hint(files: set[str]) -> str:
    if "config.json" in files and any(f.endswith(CHECKPOINT_WEIGHTS) for f in files):
        return (
            "it holds a PyTorch checkpoint; export it first with 'florence2 export REPO OUT' "
            "(needs the 'export' extra)"
        )
    shown = ", ".join(sorted(files)[:6]) + (", ..." if len(files) > 6 else "")
    return (
        f"neither onnx/{LAYOUT_MARKERS['onnx-community'][0]} (onnx-community layout) nor {CONFIG_FILE} with "
        f"onnx/{LAYOUT_MARKERS['native'][0]} (a 'florence2 export' folder) is there (files: {shown or 'none'})"
    )


# ----------------------------------------------------------------------------- command-line options


def add_model_arguments(p, which: str = "") -> None:
    """``--precision`` and ``--revision`` for a command's MODEL argument (``which="a"``: ``--precision-a``)."""
    tail = f"-{which}" if which else ""
    of = f" of model {which.upper()}" if which else ""
    p.add_argument(
        f"--precision{tail}",
        help=f"graph variant{of}: fp32, fp16, int8, q4, ... (default: fp32 on "
        "the CPU, fp16 on a GPU where the repository has it)",
    )
    p.add_argument(f"--revision{tail}", help=f"hub branch, tag or commit{of} (hub ids and aliases only)")


def model_options(args, which: str = "") -> dict:
    """The ``from_pretrained`` keywords from :func:`add_model_arguments`' options."""
    tail = f"_{which}" if which else ""
    return {"precision": getattr(args, f"precision{tail}"), "revision": getattr(args, f"revision{tail}")}


# ----------------------------------------------------------------------------- names


def repo_id_of(name: str) -> str | None:
    """The hub repository a name stands for (an alias or ``owner/name``), or None if it is neither."""
    if name.lower() in ALIASES:
        return ALIASES[name.lower()]
    return name if _REPO_ID.match(name) and ".." not in name else None


def _local_files(folder: Path) -> list[str]:
    return [p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()]


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
    files = _local_files(folder)
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
    return HubFetcher(repo_id, revision, cache_dir, local_files_only, token, str(name_or_path)).fetch(
        precision, device
    )


class HubFetcher:
    """Lists a repository (online, or its cached snapshot offline), selects the files, downloads them."""

    def __init__(
        self, repo_id: str, revision: str | None, cache_dir, local_files_only: bool | None, token, name: str
    ):
        self.hf = require("huggingface_hub", "cpu", f"Loading {name!r} from the hub")
        self.errors = require("huggingface_hub.errors", "cpu", "Loading from the hub")
        self.constants = require("huggingface_hub.constants", "cpu", "Loading from the hub")
        self.repo_id, self.revision, self.token = repo_id, revision, token
        cache_dir = cache_dir if cache_dir is not None else os.environ.get("HF_HUB_CACHE")
        self.cache_dir = str(cache_dir) if cache_dir else None
        # read at call time (huggingface_hub reads them once, at import): later changes count too
        self.endpoint = (os.environ.get("HF_ENDPOINT") or self.constants.ENDPOINT).rstrip("/")
        self.offline = (
            (self.constants.HF_HUB_OFFLINE or _env_true("HF_HUB_OFFLINE"))
            if local_files_only is None
            else bool(local_files_only)
        )
        self.what = repo_id if name == repo_id else f"{repo_id} ({name})"
        self.where = f"{self.what} at revision {revision}" if revision else self.what

    def fetch(self, precision: str | None, device: str) -> ResolvedModel:
        files, snapshot = self._listing()
        top = None
        if detect_listing_layout(files) == "native" and CONFIG_FILE in files:
            top = _read_precision(Path(self._download([CONFIG_FILE])) / CONFIG_FILE)
        sel = select(files, precision, device=device, where=self.where, top_precision=top)
        folder = Path(self._download(list(sel.files)) if snapshot is None else snapshot)
        missing = [f for f in sel.files if not (folder / f).is_file()]
        if missing:
            raise HubError(
                f"{self.where}: {', '.join(missing[:3])} not in the cache ({self._cache()}) and the hub "
                "is not reachable or disabled (HF_HUB_OFFLINE / local_files_only)"
            )
        return ResolvedModel(
            folder / sel.subfolder if sel.subfolder else folder,
            sel.precision,
            self.repo_id,
            folder.name,
            sel.files,
        )

    def _cache(self) -> str:
        return self.cache_dir or self.constants.HF_HUB_CACHE

    def _listing(self) -> tuple[list[str], str | None]:
        """(repository files, None) online; offline or unreachable, (the repository's files as the cache last saw
        them, the cached snapshot folder): the tree listing ``snapshot_download`` keeps, else the files on disk,
        so that the default precision is the same as online."""
        if not self.offline:
            try:
                api = self.hf.HfApi(endpoint=self.endpoint, token=self.token)
                info = api.model_info(self.repo_id, revision=self.revision, token=self.token)
                return [s.rfilename for s in info.siblings or []], None
            except Exception as e:
                if not self._is_connection_error(e):
                    raise self._error(e) from None
                reason = f"the hub at {self.endpoint} cannot be reached ({type(e).__name__})"
        else:
            reason = "offline (HF_HUB_OFFLINE=1 or local_files_only=True)"
        try:
            snapshot = self.hf.snapshot_download(
                self.repo_id,
                revision=self.revision,
                cache_dir=self.cache_dir,
                local_files_only=True,
                allow_patterns=[],
            )
        except Exception:
            raise HubError(f"{self.where}: {reason}, and it is not in the cache ({self._cache()})") from None
        try:
            tree = self.hf.get_cached_repo_tree(
                self.repo_id, revision=self.revision, cache_dir=self.cache_dir
            )
            return [f.path for f in tree if hasattr(f, "size")], snapshot  # files (folders have no size)
        except Exception:
            return _local_files(Path(snapshot)), snapshot

    def _download(self, files: list[str]) -> str:
        try:
            return self.hf.snapshot_download(
                self.repo_id,
                revision=self.revision,
                cache_dir=self.cache_dir,
                allow_patterns=files,
                token=self.token,
                endpoint=self.endpoint,
                local_files_only=self.offline,
            )
        except Exception as e:
            raise self._error(e) from None

    def _is_connection_error(self, e: Exception) -> bool:
        """No answer from the hub: connection refused, DNS, timeout (httpx's, requests' or the builtins)."""
        name = type(e).__name__
        return isinstance(e, (ConnectionError, TimeoutError, *self._kinds("OfflineModeIsEnabled"))) or (
            type(e).__module__.split(".")[0] in ("httpx", "httpx2", "httpcore", "requests", "urllib3")
            and ("Connect" in name or "Timeout" in name)
        )

    def _kinds(self, *names: str) -> tuple[type, ...]:
        """The exception classes of ``huggingface_hub.errors`` that this version has, of ``names``."""
        return tuple(k for k in (getattr(self.errors, n, None) for n in names) if isinstance(k, type))

    def _error(self, e: Exception) -> HubError:
        """One HubError naming the repository for whatever huggingface_hub raised."""
        kinds = self._kinds
        if isinstance(e, kinds("GatedRepoError")):
            return HubError(
                f"{self.what} is a gated repository: accept its terms on the hub and pass a token "
                "(token=..., HF_TOKEN, or 'hf auth login')"
            )
        if isinstance(e, kinds("RepositoryNotFoundError")):
            return HubError(
                f"{self.what}: no such repository on {self.endpoint} and no such local "
                "folder (a private repository needs a token)"
            )
        if isinstance(e, kinds("RevisionNotFoundError")):
            return HubError(f"{self.what}: revision {self.revision!r} not found")
        if isinstance(e, kinds("RemoteEntryNotFoundError")) or (
            isinstance(e, kinds("EntryNotFoundError")) and not isinstance(e, kinds("LocalEntryNotFoundError"))
        ):
            return HubError(f"{self.where}: {_requested_file(e)} is listed but missing on the hub")
        if isinstance(e, kinds("LocalEntryNotFoundError", "IncompleteSnapshotError", "OfflineModeIsEnabled")):
            return HubError(
                f"{self.where}: not (completely) in the cache ({self._cache()}) and the hub is not "
                "reachable or disabled (HF_HUB_OFFLINE / local_files_only)"
            )
        if self._is_connection_error(e):
            return HubError(
                f"{self.where}: the hub at {self.endpoint} cannot be reached ({type(e).__name__})"
            )
        if isinstance(e, kinds("HfHubHTTPError")):
            return HubError(f"{self.where}: the hub answered {_first_line(e)}")
        return HubError(f"{self.where}: {type(e).__name__}: {_first_line(e)}")


def _requested_file(e: Exception) -> str:
    """The repository path of the file a failed ``.../resolve/REV/PATH`` request asked for."""
    response = getattr(e, "response", None)
    url = str(getattr(response, "url", "") or "")
    return unquote(url.split("/resolve/", 1)[1].split("/", 1)[-1]) if "/resolve/" in url else "a file"


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _first_line(e: Exception) -> str:
    return next((line for line in str(e).splitlines() if line.strip()), type(e).__name__)
