"""Server settings, each declared once: a dataclass field whose :func:`setting` carries its default, meaning,
command-line flag (and unit) and bounds. From those declarations come

- the checks of the dataclass itself (``ServerLimits(max_queue=0)`` raises ``ValueError`` naming the field);
- the ``florence2 serve`` flags, their help showing the default (:meth:`Settings.add_flags`);
- the ``FLORENCE2_*`` environment variables, read when a flag is not given (:meth:`Settings.from_args`);
- the Markdown table of the docs (:func:`settings_table`).

A flag is ``--`` plus the field's name with dashes unless the field names another (``--timeout``,
``--max-body-mb`` with its value in MiB); its environment variable is ``FLORENCE2_`` plus the flag in
capitals (``FLORENCE2_MAX_BODY_MB``). Command line over environment over default.

No web framework here: the ``florence2`` command builds its parser from these classes.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Mapping
from dataclasses import MISSING, Field, dataclass, field, fields
from typing import Any, ClassVar

MIB = 1024 * 1024
ENV_PREFIX = "FLORENCE2_"
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


@dataclass(frozen=True)
class Setting:
    """How one settings field is set from outside and what values it takes."""

    help: str
    kind: type  # int, float, bool or str: the field's type (None allowed when ``optional``)
    flag: str | None = None  # None: "--" + the field name with dashes
    scale: int = 1  # the field's value is the flag's value times this (MiB -> bytes)
    minimum: float | None = None  # smallest value allowed (numbers)
    exclusive: bool = False  # the minimum itself is refused
    optional: bool = False  # None is allowed (and is the "not set" value)
    secret: bool = False  # never echoed (repr, error messages, docs default)
    group: str = "limits"

    def describe(self) -> str:
        """What a valid value is, in words: 'an integer >= 1', 'a number > 0'."""
        if self.kind is bool:
            return "true or false"
        if self.kind is str:
            return "a non-empty string"
        what = "an integer" if self.kind is int and self.scale == 1 else "a number"
        if self.minimum is None:
            return what
        return f"{what} {'>' if self.exclusive else '>='} {self.minimum:g}"

    def valid(self, value: Any) -> bool:
        """True when ``value`` (in the field's units) is allowed."""
        if value is None:
            return self.optional
        if self.kind is bool or isinstance(value, bool):
            return self.kind is bool and isinstance(value, bool)
        if self.kind is str:
            return isinstance(value, str) and value != ""
        if not isinstance(value, int if self.kind is int else (int, float)):
            return False
        low = self.minimum
        return low is None or (value > low * self.scale if self.exclusive else value >= low * self.scale)

    def parse(self, text: str) -> Any:
        """A flag's or environment variable's text -> the field's value (scaled); ValueError says why not."""
        text = text.strip()
        value: Any
        try:
            if self.kind is bool:
                if text.lower() not in _TRUE + _FALSE:
                    raise ValueError(text)
                value = text.lower() in _TRUE
            elif self.kind is str:
                value = text
            elif self.kind is int and self.scale == 1:
                value = int(text)
            else:
                number = float(text) * self.scale
                value = int(number) if self.kind is int else number
        except (ValueError, OverflowError):
            value = MISSING
        if value is MISSING or not self.valid(value):
            shown = "the given value" if self.secret else repr(text)
            raise ValueError(f"must be {self.describe()}, got {shown}")
        return value


def setting(default: Any, help: str, *, kind: type | None = None, **options: Any) -> Any:
    """A settings field: ``default`` plus a :class:`Setting` (``kind`` defaults to the default's type)."""
    spec = Setting(help, kind or type(default), **options)
    return field(default=default, repr=not spec.secret, metadata={"setting": spec})


def _flag(f: Field) -> str:
    return f.metadata["setting"].flag or "--" + f.name.replace("_", "-")


def env_name(f: Field) -> str:
    """The environment variable of a settings field: FLORENCE2_ + its flag in capitals."""
    return ENV_PREFIX + _flag(f).lstrip("-").upper().replace("-", "_")


def _shown_default(f: Field) -> str:
    spec: Setting = f.metadata["setting"]
    default: Any = f.default  # every setting has one (setting() gives it)
    if default is None:
        return "none"
    if spec.kind is bool:
        return "on" if default else "off"
    if spec.kind is str or (spec.kind is int and spec.scale == 1):
        return str(default)
    return f"{default / spec.scale:g}"


class Settings:
    """Base of the settings dataclasses: checks every field against its :class:`Setting` on creation."""

    GROUPS: ClassVar[Mapping[str, str]] = {}  # Setting.group -> the title of its flags in --help

    def __post_init__(self) -> None:
        for f in settings_fields(type(self)):
            spec: Setting = f.metadata["setting"]
            value = getattr(self, f.name)
            if not spec.valid(value):
                shown = "a wrong value" if spec.secret else repr(value)
                raise ValueError(f"{f.name} must be {spec.describe()}, got {shown}")

    @classmethod
    def add_flags(
        cls,
        parser: argparse.ArgumentParser,
        groups: dict[str, Any] | None = None,
        skip: Iterable[str] = (),
    ) -> None:
        """One flag per field (but ``skip``), in argument groups titled by ``GROUPS`` (``groups``: ones
        made already, by group name). Flags default to None: :meth:`from_args` fills in the rest."""
        groups = {} if groups is None else groups
        for f in settings_fields(cls):
            if f.name in skip:
                continue
            spec: Setting = f.metadata["setting"]
            if spec.group not in groups:
                groups[spec.group] = parser.add_argument_group(cls.GROUPS.get(spec.group, spec.group))
            text = f"{spec.help} (default: {_shown_default(f)}; ${env_name(f)})".replace("%", "%%")
            if spec.kind is bool:
                groups[spec.group].add_argument(
                    _flag(f), action=argparse.BooleanOptionalAction, default=None, help=text
                )
            else:
                groups[spec.group].add_argument(
                    _flag(f), type=_argparse_type(spec), default=None, help=text, metavar=_metavar(spec)
                )

    @classmethod
    def from_args(cls, args: argparse.Namespace, environ: Mapping[str, str], **given: Any):
        """An instance from parsed flags (:meth:`add_flags`), then ``environ``, then the defaults;
        ``given``: values decided elsewhere (e.g. a key read from a file). ValueError names a bad variable."""
        values = dict(given)
        for f in settings_fields(cls):
            if f.name in values:
                continue
            value = getattr(args, _flag(f).lstrip("-").replace("-", "_"), None)
            text = environ.get(env_name(f), "")
            if value is None and text.strip():
                try:
                    value = f.metadata["setting"].parse(text)
                except ValueError as e:
                    raise ValueError(f"${env_name(f)} {e}") from None
            if value is not None:
                values[f.name] = value
        return cls(**values)


def settings_fields(cls: type) -> list[Field]:
    """The fields of a settings dataclass that are settings (declared with :func:`setting`)."""
    return [f for f in fields(cls) if "setting" in f.metadata]


def settings_table(*classes: type) -> str:
    """A Markdown table of every setting of ``classes``: flag, environment variable, default, meaning."""
    rows = ["| flag | environment variable | default | meaning |", "|---|---|---|---|"]
    for cls in classes:
        for f in settings_fields(cls):
            spec: Setting = f.metadata["setting"]
            default = _shown_default(f)
            rows.append(f"| `{_flag(f)}` | `{env_name(f)}` | {default} | {spec.help} |")
    return "\n".join(rows) + "\n"


def _argparse_type(spec: Setting):
    def convert(text: str) -> Any:
        try:
            return spec.parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    convert.__name__ = spec.kind.__name__  # argparse names the type in its own messages
    return convert


def _metavar(spec: Setting) -> str:
    if spec.kind is str:
        return "TEXT"
    return {1: "N" if spec.kind is int else "X", MIB: "MB"}.get(spec.scale, "X")


@dataclass(frozen=True)
class ServerLimits(Settings):
    """What one server accepts and how it batches; the defaults are safe for a public-facing port.

    Sizes are in bytes and pixels, times in seconds (``max_wait_ms`` in milliseconds); the flags take
    sizes of bodies and assets in MiB.
    """

    GROUPS: ClassVar[Mapping[str, str]] = {
        "batching": "batching",
        "limits": "limits",
        "assets": "NVCF assets (images uploaded for the NVIDIA-format route)",
    }

    max_batch_size: int = setting(
        8,
        "requests run through the model together; 1 turns dynamic batching off",
        minimum=1,
        group="batching",
    )
    max_wait_ms: float = setting(
        5.0, "how long a batch waits for company once the model is free (ms)", minimum=0, group="batching"
    )
    max_queue: int = setting(64, "requests waiting for the model; more are answered 503", minimum=1)
    retry_after_s: int = setting(
        1, "the Retry-After header of a 503 (seconds)", minimum=1, flag="--retry-after"
    )
    request_timeout_s: float = setting(
        120.0, "seconds a request may wait and run; then 504", minimum=0, exclusive=True, flag="--timeout"
    )
    max_body_bytes: int = setting(
        20 * MIB,
        "size of a request body in MiB (base64 inflates an image by 4/3); larger: 413",
        minimum=0,
        exclusive=True,
        scale=MIB,
        flag="--max-body-mb",
    )
    max_pixels: int = setting(
        40_000_000, "width x height of an image, read from its header before decoding; more: 413", minimum=1
    )
    max_new_tokens: int = setting(
        1024,
        "largest generation.max_new_tokens a request may ask for, and the default of requests that ask "
        "for none (capped by the model's positions)",
        minimum=1,
    )
    max_num_beams: int = setting(8, "largest generation.num_beams a request may ask for", minimum=1)
    max_text_bytes: int = setting(
        8192, "UTF-8 size of a request's text, checked before it is tokenised; more: 422", minimum=1
    )
    header_timeout_s: float = setting(
        10.0,
        "seconds a connection may take to send a request's headers; then it is closed",
        minimum=0,
        exclusive=True,
        flag="--header-timeout",
    )
    body_timeout_s: float = setting(
        60.0,
        "seconds a request may take to send its body; then 408",
        minimum=0,
        exclusive=True,
        flag="--body-timeout",
    )
    max_connections: int = setting(
        512,
        "open connections (also bounded by the open-file limit); past it the one idle longest is closed",
        minimum=1,
    )
    max_concurrent_decodes: int = setting(
        2, "images decoded at once (each holds its full-resolution pixels meanwhile)", minimum=1
    )
    jpeg_draft: bool = setting(
        False,
        "decode JPEGs at a reduced scale still >= the model's size: less memory, but the pixels differ "
        "slightly from Florence2.run's full decode",
    )
    max_assets: int = setting(32, "assets held at once", minimum=1, group="assets")
    max_asset_bytes: int = setting(
        20 * MIB,
        "size of one asset in MiB",
        minimum=0,
        exclusive=True,
        scale=MIB,
        flag="--max-asset-mb",
        group="assets",
    )
    max_assets_total_bytes: int = setting(
        256 * MIB,
        "size of all assets together in MiB",
        minimum=0,
        exclusive=True,
        scale=MIB,
        flag="--max-assets-total-mb",
        group="assets",
    )
    asset_ttl_s: float = setting(
        900.0, "seconds an asset lives", minimum=0, exclusive=True, flag="--asset-ttl", group="assets"
    )
    api_key: str | None = setting(
        None,
        "require this key (Authorization: Bearer KEY or X-API-Key: KEY); on the command line it is visible "
        "to every local user in the process list: prefer the environment variable or --api-key-file",
        kind=str,
        optional=True,
        secret=True,
        group="access",
    )
