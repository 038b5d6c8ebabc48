"""The runtime config: everything the runtime needs from a checkpoint, in one JSON file.

The exporter writes ``florence2_config.json`` next to ``tokenizer.json`` and
``generation_config.json``; the runtime never reads a transformers config.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from ..errors import ModelFileError
from ..inputs.image_size import ImageSize
from .graphs import ModelDims

CONFIG_FILE = "florence2_config.json"
GENERATION_CONFIG_FILE = "generation_config.json"
TOKENIZER_FILE = "tokenizer.json"
FORMAT_VERSION = 2  # the folder format this runtime reads (florence2_config.json's format_version)
REEXPORT = "export the checkpoint again with 'florence2 export CHECKPOINT OUT'"
DEFAULT_IMAGE_SIZE = ImageSize(768, 768)  # the published checkpoints' input size


def square_image_size(value: object) -> ImageSize:
    """A model's input size, checked: an :class:`ImageSize` whose width equals its height.

    transformers' Florence-2 vision tower (DaViT) reshapes its patch tokens into a square feature map, so a
    checkpoint whose processor resizes to a non-square size cannot run there, nor be exported; this is
    refused when a model folder is loaded and when a checkpoint is exported. Raises ``ValueError``."""
    size = ImageSize.of(value)
    if size.width != size.height:
        raise ValueError(
            f"image_size is {size.width}x{size.height} (width x height): Florence-2's vision tower takes "
            "square images only (transformers' Florence2VisionModel), so a non-square processor size "
            "cannot be run or exported"
        )
    return size


@dataclass(frozen=True)
class RuntimeConfig:
    """Sizes, token ids, preprocessing and prompt tables of one exported model."""

    # model dimensions
    d_model: int
    vocab_size: int
    encoder_layers: int
    decoder_layers: int
    encoder_heads: int
    decoder_heads: int
    max_position_embeddings: int
    num_image_tokens: int
    image_token_id: int
    # special tokens
    bos_token_id: int = 0
    pad_token_id: int = 1
    eos_token_id: int = 2
    unk_token_id: int = 3
    decoder_start_token_id: int = 2
    # preprocessing (CLIPImageProcessor semantics)
    image_size: ImageSize = DEFAULT_IMAGE_SIZE  # the model's input (width, height), square; JSON [w, h]
    image_mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    image_std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    rescale_factor: float = 1 / 255
    resample: int = 3  # PIL.Image.BICUBIC
    # prompts and post-processing
    task_prompts_without_inputs: dict[str, str] = field(default_factory=dict)
    task_prompts_with_input: dict[str, str] = field(default_factory=dict)
    banned_grounding_tokens: tuple[str, ...] = ()
    # bookkeeping
    float_dtype: str = "float32"  # element type of the graphs' float inputs/outputs (every variant: float32)
    precision: str = (
        "fp32"  # what the graphs compute in: fp32, fp16 (fp32 I/O) or int8 (dynamic quantisation)
    )
    int8_recipe: str = ""  # int8 folders: how weights were quantised (int8cpu.RECIPES); "": not recorded
    source: str = ""
    adapters: tuple[
        dict, ...
    ] = ()  # PEFT adapters merged at export: name or path, peft_type, weights file, sha256
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        object.__setattr__(self, "image_size", square_image_size(self.image_size))

    @property
    def dims(self) -> ModelDims:
        return ModelDims(
            image_size=self.image_size,
            num_image_tokens=self.num_image_tokens,
            d_model=self.d_model,
            vocab_size=self.vocab_size,
            decoder_layers=self.decoder_layers,
            decoder_heads=self.decoder_heads,
        )

    def to_dict(self) -> dict:
        d = asdict(self)
        for k in ("image_size", "image_mean", "image_std", "banned_grounding_tokens", "adapters"):
            d[k] = list(d[k])
        return d

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / CONFIG_FILE
        path.write_text(json.dumps(self.to_dict(), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        return path

    @classmethod
    def from_dict(cls, d: dict) -> RuntimeConfig:
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in known}
        for k in ("image_size", "image_mean", "image_std", "banned_grounding_tokens", "adapters"):
            if k in kwargs:
                kwargs[k] = tuple(kwargs[k])
        return cls(**kwargs)

    @classmethod
    def load(cls, folder: str | Path) -> RuntimeConfig:
        path = Path(folder) / CONFIG_FILE
        d = read_json(path)
        version = d.get("format_version", 1)
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise ModelFileError(path, f"format version {version!r} is newer than this runtime supports")
        if version < FORMAT_VERSION:
            raise ModelFileError(
                path,
                f"folder format {version} (an earlier florence2 export) is not read any more; {REEXPORT}",
            )
        try:
            return cls.from_dict(d)
        except TypeError as e:
            raise ModelFileError(path, f"missing or malformed fields ({e})") from None
        except ValueError as e:  # image_size: not (width, height), or not square
            raise ModelFileError(path, str(e)) from None


def read_json(path: Path) -> dict:
    """Read a JSON object, naming the file in any error."""
    if not path.is_file():
        raise ModelFileError(path, "file not found")
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelFileError(path, f"not valid JSON ({e})") from None
    if not isinstance(d, dict):
        raise ModelFileError(path, "expected a JSON object")
    return d
