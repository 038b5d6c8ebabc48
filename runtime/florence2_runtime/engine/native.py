"""The native layout (folders written by ``florence2 export``): its ONNX Runtime sessions and the decoder
step with its KV cache. :class:`~.host.HostEngine` runs them in host memory, :class:`~.iobinding.DeviceEngine`
on the device."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelFileError
from .config import RuntimeConfig
from .graphs import EMBEDDINGS_FILE, ONNX_DIR, GraphSpec, kv_names, native_graphs
from .providers import create_session, onnxruntime

ProviderList = list[tuple[str, dict[str, Any]]]
ProvidersFor = ProviderList | Callable[[GraphSpec], ProviderList]


class Sessions:
    """The three graphs of a native-layout folder plus the memory-mapped embedding table."""

    def __init__(
        self,
        folder: Path,
        cfg: RuntimeConfig,
        providers: ProvidersFor,
        session_options=None,
        precision: str | None = None,
    ):
        """providers: one ``[(name, options)]`` list for every graph, or a function of the graph's spec
        giving its own list (TensorRT needs per-graph optimisation profiles). precision: the precision the
        folder must hold (``florence2_config.json``'s ``precision``), None for any."""
        if precision is not None and precision != cfg.precision:
            raise ModelFileError(
                Path(folder) / "florence2_config.json",
                f"holds {cfg.precision} graphs, not the {precision} asked for",
            )
        self.cfg = cfg
        self.specs = native_graphs(cfg.dims)
        onnx_dir = Path(folder) / ONNX_DIR
        self.files = [onnx_dir / spec.filename for spec in self.specs.values()]  # the graph files in use
        providers_for = providers if callable(providers) else (lambda spec: providers)

        def open_graph(name: str):
            spec = self.specs[name]
            session = create_session(onnx_dir / spec.filename, providers_for(spec), session_options)
            release_freed_memory()  # before the next graph's load spike comes on top
            return session

        self.vision, self.text, self.decoder = (
            open_graph(n) for n in ("vision_encoder", "text_encoder", "decoder")
        )
        self.embed_tokens = _load_embeddings(onnx_dir / EMBEDDINGS_FILE, cfg)
        self.cross_names = kv_names("cross", cfg.decoder_layers)
        self.past_names = kv_names("past", cfg.decoder_layers)

    @property
    def providers(self) -> list[str]:
        return self.decoder.get_providers()

    def step_feed(self, new_ids: np.ndarray) -> dict[str, np.ndarray]:
        """The decoder's input for new tokens [N, t] int64: their embedding rows [N, t, D]."""
        return {"inputs_embeds": np.ascontiguousarray(self.embed_tokens[new_ids], dtype=np.float32)}

    def encode_images(self, pixel_values: np.ndarray) -> np.ndarray:
        """pixel_values [B, 3, H, W] float32 -> image_features [B, I, D].

        On the CPU one image per run: batching gains nothing there (a 768 px image already fills every
        GEMM), while the vision encoder's activations (~300 MB per base image) would grow with the batch.
        """
        if len(pixel_values) > 1 and self.vision.get_providers()[0] == "CPUExecutionProvider":
            return np.concatenate(
                [self.encode_images(pixel_values[i : i + 1]) for i in range(len(pixel_values))]
            )
        return self.vision.run(None, {"pixel_values": pixel_values}, self._encoder_run_options())[0]

    def encode_text(self, text_ids: np.ndarray, text_mask: np.ndarray, image_features: np.ndarray):
        """text_ids, text_mask [B, T] -> (cross K/V list of [B, h, I + T, hd], encoder mask [B, I + T])."""
        b = text_ids.shape[0]
        mask = np.concatenate(
            [np.ones((b, self.cfg.num_image_tokens), np.int64), text_mask.astype(np.int64)], axis=1
        )
        embeds = np.ascontiguousarray(self.embed_tokens[text_ids], dtype=np.float32)
        feed = {"inputs_embeds": embeds, "image_features": image_features, "attention_mask": mask}
        cross = self.text.run(None, feed, self._encoder_run_options())
        return cross, mask

    def _encoder_run_options(self):
        """CPU: give the encoders' arena memory back after each run (their activations, ~600 MB for a base
        image, would otherwise stay reserved while the decoder's memory comes on top); None elsewhere."""
        if self.vision.get_providers()[0] != "CPUExecutionProvider":
            return None
        options = onnxruntime().RunOptions()
        options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
        return options


def release_freed_memory() -> None:
    """Return the C heap's free pages to the OS (glibc ``malloc_trim``; a no-op elsewhere).

    Loading a single-file .onnx parses it into protobuf buffers that are freed once the session holds
    its weights; glibc keeps that memory (~200 MB for base) unless asked.
    """
    try:
        import ctypes

        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (musl, macOS, Windows)
        pass


def _load_embeddings(path: Path, cfg: RuntimeConfig) -> np.ndarray:
    if not path.is_file():
        raise ModelFileError(path, "file not found")
    try:
        table = np.load(path, mmap_mode="r")
    except (ValueError, OSError) as e:
        raise ModelFileError(path, f"not a readable .npy file ({e})") from None
    if table.ndim != 2 or table.shape[1] != cfg.d_model:
        raise ModelFileError(path, f"expected shape [vocab, {cfg.d_model}], found {list(table.shape)}")
    return table


class DecoderInference:
    """Runs the decoder graph one step at a time, keeping the self-attention KV cache.

    Implements the ``Inference`` protocol of :mod:`florence2_runtime.generation`. Rows are
    ``batch * num_beams`` sequences; the cross-attention K/V and the encoder mask are fixed
    per request (beams of one item share them, so beam reordering never touches them).
    """

    def __init__(
        self, sessions: Sessions, cross: list[np.ndarray], encoder_mask: np.ndarray, rows: int | None = None
    ):
        """rows: decoder rows (items * beams); default one per encoder row."""
        self.sessions = sessions
        cfg = sessions.cfg
        n = encoder_mask.shape[0] if rows is None else rows
        empty = np.zeros((n, cfg.decoder_heads, 0, cfg.d_model // cfg.decoder_heads), np.float32)
        self.past: list[np.ndarray] = [empty] * (2 * cfg.decoder_layers)
        self.feed_fixed = {"encoder_attention_mask": encoder_mask, **dict(zip(sessions.cross_names, cross))}

    @property
    def past_length(self) -> int:
        return self.past[0].shape[2]

    def logits(self, tokens: np.ndarray) -> np.ndarray:
        """tokens [N, T] (whole sequences so far) -> next-token logits [N, V]; feeds only the new tokens."""
        new = np.ascontiguousarray(tokens[:, self.past_length :], dtype=np.int64)
        feed = {
            **self.sessions.step_feed(new),
            **self.feed_fixed,
            **dict(zip(self.sessions.past_names, self.past)),
        }
        logits, *self.past = self.sessions.decoder.run(None, feed)
        return logits

    def rearrange_kv_cache(self, source_indices: np.ndarray) -> None:
        """Reorder the cache rows so that row i continues the sequence of row ``source_indices[i]``."""
        self.past = [np.take(p, source_indices, axis=0) for p in self.past]


def session_options(threads: int | None = None):
    """Default session options: full graph optimisation, ``threads`` intra-op threads (None: onnxruntime's choice)."""
    ort = onnxruntime()
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = 1
    return so
