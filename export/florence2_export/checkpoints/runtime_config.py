"""What the runtime needs from a loaded checkpoint: its :class:`~florence2_runtime.engine.config.RuntimeConfig`."""

from __future__ import annotations

from florence2_runtime.engine.config import RuntimeConfig, square_image_size
from florence2_runtime.inputs.image_size import ImageSize

from .errors import CheckpointError


def processor_image_size(processor, source: str) -> ImageSize:
    """The size the checkpoint's image processor resizes to, checked: Florence-2 takes square images only
    (:func:`~florence2_runtime.engine.config.square_image_size`); a :class:`CheckpointError` naming it."""
    size = processor.image_processor.size
    width, height = (size["width"], size["height"]) if "height" in size else (size["shortest_edge"],) * 2
    try:
        return square_image_size((width, height))
    except ValueError as e:
        raise CheckpointError(f"{source}: preprocessor_config.json 'size' cannot be exported: {e}") from None


def runtime_config_from(model, processor, source: str) -> RuntimeConfig:
    """Collect everything the runtime needs from a loaded model + processor."""
    tc = model.config.text_config
    ip = processor.image_processor
    image_size = processor_image_size(processor, source)
    post = processor.post_processor_config or {}
    banned = post.get("phrase_grounding", {}).get("banned_grounding_tokens", [])
    return RuntimeConfig(
        d_model=tc.d_model,
        vocab_size=model.lm_head.out_features,
        encoder_layers=tc.encoder_layers,
        decoder_layers=tc.decoder_layers,
        encoder_heads=tc.encoder_attention_heads,
        decoder_heads=tc.decoder_attention_heads,
        max_position_embeddings=tc.max_position_embeddings,
        num_image_tokens=processor.num_image_tokens,
        image_token_id=model.config.image_token_id,
        bos_token_id=tc.bos_token_id,
        pad_token_id=tc.pad_token_id,
        eos_token_id=tc.eos_token_id,
        unk_token_id=processor.tokenizer.unk_token_id,
        decoder_start_token_id=tc.decoder_start_token_id,
        image_size=image_size,
        image_mean=_rgb(ip.image_mean),
        image_std=_rgb(ip.image_std),
        rescale_factor=float(ip.rescale_factor),
        resample=int(ip.resample),
        task_prompts_without_inputs=dict(processor.task_prompts_without_inputs),
        task_prompts_with_input=dict(processor.task_prompts_with_input),
        banned_grounding_tokens=tuple(banned),
        source=str(source),
    )


def _rgb(values) -> tuple[float, float, float]:
    """One number per RGB channel (the processor's mean or std)."""
    r, g, b = (float(x) for x in values)
    return r, g, b
