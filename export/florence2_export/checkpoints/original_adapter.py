"""PEFT adapters saved against the original remote-code layout, mapped onto the transformers-native model.

Such an adapter names the remote-code modules: tensors ``base_model.model.language_model.model.decoder.
layers.0.self_attn.q_proj.lora_A.weight``, ``base_model.model.vision_tower.blocks.0.0.spatial_block.
window_attn.fn.qkv.lora_B.weight``, ``base_model.model.language_model.lm_head.weight`` (modules_to_save),
and ``target_modules`` / ``modules_to_save`` / ``rank_pattern`` / ``alpha_pattern`` / ``exclude_modules``
/ ``layers_to_transform`` matched against those names.

Module names map through the checkpoint conversion's renaming table (:data:`.original.RENAMES`): a native
module ``M`` holding a tensor ``M.p`` corresponds to the original module ``O`` when ``M.p`` renames to
``O.p``. peft's own matching (``check_target_module_exists``) picks the original modules the config
selects; the native config then lists exactly their native names, so peft selects the same modules in
the native model. Tensors are renamed by their module prefix. A tensor or module that has no native
counterpart raises :class:`~.errors.AdapterError` naming it.
"""

from __future__ import annotations

import copy
import re

from .errors import AdapterError
from .original import rename

PREFIX = "base_model.model."
ORIGINAL_ROOTS = (
    "vision_tower",
    "language_model",
    "image_projection",
    "image_proj_norm",
    "image_pos_embed",
    "visual_temporal_embed",
)
NATIVE_ROOTS = ("model", "lm_head")


def _error(message: str) -> AdapterError:
    return AdapterError(message)


def module_map(model) -> dict[str, str]:
    """Original module name -> native module name, for every native module that holds a tensor."""
    out: dict[str, str] = {}
    names = [n for n, _ in model.named_parameters(remove_duplicate=False)]
    names += [n for n, _ in model.named_buffers(remove_duplicate=False)]
    for name in names:
        module, _, leaf = name.rpartition(".")
        original = rename(name, to_native=False)
        if module and original and original.endswith("." + leaf):
            out[original[: -len(leaf) - 1]] = module
    return out


def _strip(key: str) -> str:
    return key[len(PREFIX) :] if key.startswith(PREFIX) else key


def is_original_adapter(tensors: dict, name: str) -> bool:
    """Whether the adapter's tensor names are those of the original layout (else native); mixed raises."""
    roots = {_strip(k).split(".", 1)[0] for k in tensors}
    original, native = roots & set(ORIGINAL_ROOTS), roots & set(NATIVE_ROOTS)
    if original and native:
        raise _error(
            f"adapter {name}: its tensors mix the original layout ({', '.join(sorted(original))}) and the "
            f"native one ({', '.join(sorted(native))})"
        )
    unknown = roots - set(ORIGINAL_ROOTS) - set(NATIVE_ROOTS)
    if unknown:
        raise _error(
            f"adapter {name}: tensors under {', '.join(sorted(unknown))} belong to no Florence-2 module"
        )
    return bool(original)


def _native_module(key: str, modules: dict[str, str], name: str) -> tuple[str, str]:
    """(native module, remainder) of an original tensor name (without the peft prefix); longest module first."""
    parts = key.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        native = modules.get(".".join(parts[:cut]))
        if native is not None:
            return native, ".".join(parts[cut:])
    raise _error(
        f"adapter {name}: tensor {PREFIX}{key} names a module of the original layout that has no native "
        "counterpart"
    )


def _selected(config, original_names: list[str]) -> list[str]:
    from peft.tuners.tuners_utils import check_target_module_exists

    return [o for o in original_names if check_target_module_exists(config, o)]


def _matches_modules_to_save(module: str, modules_to_save) -> bool:
    return any(module.endswith(target) for target in modules_to_save)  # peft's rule (_set_trainable)


def _pattern_map(patterns: dict, targets: dict[str, str]) -> dict:
    """rank_pattern / alpha_pattern keyed on original names -> keyed on the exact native names."""
    from peft.utils.other import get_pattern_key

    out = {}
    for original, native in targets.items():
        key = get_pattern_key(list(patterns), original)
        if key in patterns:
            out[re.escape(native)] = patterns[key]
    return out


def to_native(config, tensors: dict, model, name: str):
    """(native peft config, native tensors) for an original-layout adapter applied to the native ``model``."""
    modules = module_map(model)
    for field in ("target_parameters", "trainable_token_indices", "layer_replication"):
        if getattr(config, field, None):
            raise _error(f"adapter {name}: {field} is set; it cannot be mapped from the original layout")
    original_names = sorted(modules)
    targets = {o: modules[o] for o in _selected(config, original_names)} if config.target_modules else {}
    config = copy.deepcopy(config)
    for field in ("rank_pattern", "alpha_pattern"):
        if getattr(config, field, None):
            setattr(config, field, _pattern_map(getattr(config, field), targets))
    if config.modules_to_save:
        saved = [modules[o] for o in original_names if _matches_modules_to_save(o, config.modules_to_save)]
        config.modules_to_save = sorted(set(saved)) or None
    if config.target_modules:
        if not targets:
            raise _error(
                f"adapter {name}: target_modules {config.target_modules!r} match no module of the original "
                "layout that has a native counterpart"
            )
        config.target_modules = sorted(set(targets.values()))
    for field in ("exclude_modules", "layers_to_transform", "layers_pattern"):
        if hasattr(config, field):
            setattr(config, field, None)
    out = {}
    for key, t in tensors.items():
        native, rest = _native_module(_strip(key), modules, name)
        out[f"{PREFIX}{native}.{rest}"] = t
    return config, out
