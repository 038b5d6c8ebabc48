"""The device path: IO binding keeps encoder outputs and both KV caches where the model runs.

On a GPU the per-token cost of the plain path is dominated by copies: every step would move the
whole self-attention cache (and the cross K/V) to the host and back. Here every tensor of a
request stays on the device from the vision encoder to the last decoder step:

    pixel_values, prompt embeddings  --host->device once-->  image_features, cross K/V (device)
    each step:  the new tokens' embeddings [N, 1, D] host->device;  logits [N, V] device->host;  present K/V stay on the device
    beam search: kv_gather.onnx repeats cross K/V per beam once and reorders the cache each step, on the device

The logits cross to the host because the logit filters and the beam bookkeeping run there, in
numpy, bit-compatible with transformers. ``Florence2.from_pretrained(..., io_binding=True)`` forces
this path on the CPU provider too, which is how CI proves its tokens equal the plain path's.
:class:`DeviceEngine` implements :class:`~.interface.Engine`, as :class:`~.host.HostEngine` does for the
plain path; ``Florence2.from_pretrained`` picks one of the two.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .graphs import kv_gather_graph, kv_names
from .native import ProvidersFor, Sessions
from .providers import create_session, onnxruntime

# where a provider keeps its tensors: onnxruntime device type of its OrtValues
DEVICE_OF_PROVIDER = {
    "CUDAExecutionProvider": "cuda",
    "TensorrtExecutionProvider": "cuda",
    "CPUExecutionProvider": "cpu",
}


def needs_device_buffers(provider: str) -> bool:
    """Whether ``provider`` computes in device memory, so IO binding pays off (on by default there).

    Providers that compute in host memory (CPU, OpenVINO, and any provider not listed above) take the
    plain numpy path unless ``io_binding=True`` is asked for."""
    return DEVICE_OF_PROVIDER.get(provider, "cpu") != "cpu"


def device_of(providers: list[tuple[str, dict[str, Any]]]) -> tuple[str, int]:
    """``(device_type, device_id)`` of the first provider: where the bound tensors live."""
    name, options = providers[0]
    device = DEVICE_OF_PROVIDER.get(name)
    if device is None:
        raise ValueError(f"IO binding is supported with {', '.join(DEVICE_OF_PROVIDER)}; not with {name}")
    return device, int(options.get("device_id", 0))


class DeviceEngine:
    """:class:`~.interface.Engine` with IO binding: the encoders run on the device and
    :class:`BoundDecoderInference` keeps every K/V tensor there (native layout)."""

    def __init__(self, sessions: Sessions, folder: Path, providers: ProvidersFor, session_options=None):
        self.sessions = sessions
        self.config = sessions.cfg
        spec = kv_gather_graph(sessions.cfg.dims)
        gather_providers = providers(spec) if callable(providers) else providers
        self.device, self.device_id = device_of(gather_providers)
        path = Path(folder) / "onnx" / spec.filename
        # folders exported before kv_gather existed still work: their gathers run on the host
        self.gather = create_session(path, gather_providers, session_options) if path.is_file() else None
        self.gather_inputs = spec.input_names[1:]
        self.ort = onnxruntime()

    def to_device(self, array: np.ndarray):
        return self.ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array), self.device, self.device_id)

    def empty(self, shape: tuple[int, ...], dtype=np.float32):
        return self.ort.OrtValue.ortvalue_from_shape_and_type(list(shape), dtype, self.device, self.device_id)

    def run(
        self, session, inputs: dict[str, Any], device_outputs: list[str], host_outputs: tuple[str, ...] = ()
    ):
        """Run ``session`` with bound inputs (numpy arrays copied in, OrtValues as they are).

        Returns ``{name: OrtValue}`` for ``device_outputs`` and ``{name: ndarray}`` for ``host_outputs``.
        """
        binding = session.io_binding()
        for name, value in inputs.items():
            if isinstance(value, np.ndarray):
                binding.bind_ortvalue_input(name, self.to_device(value))
            else:
                binding.bind_ortvalue_input(name, value)
        for name in host_outputs:
            binding.bind_output(name, "cpu")
        for name in device_outputs:
            binding.bind_output(name, self.device, self.device_id)
        session.run_with_iobinding(binding)
        values = binding.get_outputs()
        names = [*host_outputs, *device_outputs]
        return {n: (v.numpy() if n in host_outputs else v) for n, v in zip(names, values)}

    def gather_rows(self, values: list, index: np.ndarray) -> list:
        """Rows ``index`` of every tensor in ``values`` (2 * decoder_layers OrtValues), on the device."""
        if self.gather is None:
            return [self.to_device(np.take(v.numpy(), index, axis=0)) for v in values]
        out = self.run(
            self.gather,
            {"index": index.astype(np.int64), **dict(zip(self.gather_inputs, values))},
            [o.name for o in self.gather.get_outputs()],
        )
        return list(out.values())

    @property
    def providers(self) -> list[str]:
        return self.sessions.providers

    @property
    def files(self) -> list[Path]:
        return self.sessions.files

    def encode_images(self, pixel_values: np.ndarray, *, to_host: bool = True):
        """pixel_values [B, 3, H, W] float32 -> image_features [B, I, D]: on the host (an ``EncodedImage``'s),
        or with ``to_host=False`` an OrtValue on the device."""
        s = self.sessions
        if to_host:
            return self.run(s.vision, {"pixel_values": pixel_values}, [], host_outputs=("image_features",))[
                "image_features"
            ]
        return self.run(s.vision, {"pixel_values": pixel_values}, ["image_features"])["image_features"]

    def encode_text(
        self, text_ids: np.ndarray, text_mask: np.ndarray, features, *, to_host: bool = True
    ) -> tuple[list, np.ndarray]:
        """text ids, mask [B, T] int64, image features [B, I, D] (a host array, copied to the device once, or an
        OrtValue) -> (cross K/V: numpy arrays, or OrtValues on the device with ``to_host=False``; mask [B, I + T])."""
        s = self.sessions
        b = text_ids.shape[0]
        mask = np.concatenate(
            [np.ones((b, s.cfg.num_image_tokens), np.int64), text_mask.astype(np.int64)], axis=1
        )
        embeds = np.ascontiguousarray(s.embed_tokens[text_ids], dtype=np.float32)
        feed = {"inputs_embeds": embeds, "image_features": features, "attention_mask": mask}
        if to_host:
            out = self.run(s.text, feed, [], host_outputs=tuple(s.cross_names))
        else:
            out = self.run(s.text, feed, s.cross_names)
        return [out[n] for n in s.cross_names], mask

    def decoder(self, cross: list, encoder_mask: np.ndarray, num_beams: int = 1) -> BoundDecoderInference:
        """The decoder state for ``batch * num_beams`` rows; cross K/V as OrtValues (numpy arrays are copied
        to the device once; one cross K/V and mask row per item, shared by its beams)."""
        b = encoder_mask.shape[0]
        cross = [self.to_device(c) if isinstance(c, np.ndarray) else c for c in cross]
        return BoundDecoderInference(self, cross, encoder_mask, rows=b * num_beams)

    def start(
        self, features, text_ids: np.ndarray, text_mask: np.ndarray, num_beams: int = 1
    ) -> BoundDecoderInference:
        # no local reference: with beams the un-repeated cross K/V would stay alive during decoding
        return self.decoder(*self.encode_text(text_ids, text_mask, features, to_host=False), num_beams)


class BoundDecoderInference:
    """The ``Inference`` protocol of :mod:`florence2_runtime.generation` with every K/V tensor on the device.

    Rows are ``batch * num_beams`` sequences; ``cross`` holds 2 * decoder_layers OrtValues
    [rows, heads, encoder_length, head_dim] and is fixed for the request.
    """

    def __init__(self, engine: DeviceEngine, cross: list, encoder_mask: np.ndarray, rows: int | None = None):
        self.engine = engine
        s = engine.sessions
        cfg = s.cfg
        rows = encoder_mask.shape[0] if rows is None else rows
        self.fixed = {
            "encoder_attention_mask": engine.to_device(encoder_mask),
            **dict(zip(s.cross_names, cross)),
        }
        empty = engine.empty((rows, cfg.decoder_heads, 0, cfg.d_model // cfg.decoder_heads))
        self.past: list = [empty] * (2 * cfg.decoder_layers)
        self.present_names = kv_names("present", cfg.decoder_layers)

    @property
    def past_length(self) -> int:
        return self.past[0].shape()[2]

    def logits(self, tokens: np.ndarray) -> np.ndarray:
        """tokens [N, T] (whole sequences so far) -> next-token logits [N, V] on the host."""
        s = self.engine.sessions
        new = np.ascontiguousarray(tokens[:, self.past_length :], dtype=np.int64)
        inputs = {**s.step_feed(new), **self.fixed, **dict(zip(s.past_names, self.past))}
        out = self.engine.run(s.decoder, inputs, self.present_names, host_outputs=("logits",))
        self.past = [out[n] for n in self.present_names]
        return out["logits"]

    def rearrange_kv_cache(self, source_indices: np.ndarray) -> None:
        """Row i of the cache continues row ``source_indices[i]``; a gather on the device.

        :func:`~florence2_runtime.generation.generate` does not call it for the identity (greedy search, beams that kept their order)."""
        self.past = self.engine.gather_rows(self.past, source_indices)
