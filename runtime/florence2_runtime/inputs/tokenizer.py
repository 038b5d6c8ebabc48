"""Florence-2's tokenizer (byte-level BPE, BART layout) on the ``tokenizers`` library alone.

What ``Florence2Processor`` does with text in transformers 5: ``"<image>" * N + "<s>" + prompt + "</s>"``
encoded with ``add_special_tokens=False`` (the added tokens split the text, so the prompt is
tokenised on its own), right-padded with ``<pad>``. Decoding is the backend's
``decode(ids, skip_special_tokens=False)`` and nothing more: transformers 5 ignores
``clean_up_tokenization_spaces`` for BPE tokenizers (and its default is False anyway).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from ..errors import ModelFileError

BOS, PAD, EOS, UNK, IMAGE = "<s>", "<pad>", "</s>", "<unk>", "<image>"


def read_tokenizer_file(path: str | Path) -> Tokenizer:
    """A ``tokenizers`` file, or :class:`ModelFileError` naming it when it is missing or unreadable."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(path, "file not found")
    try:
        return Tokenizer.from_file(str(path))
    except Exception as e:  # the Rust side raises plain Exception subclasses
        raise ModelFileError(path, f"not a valid tokenizers file ({e})") from None


class Florence2Tokenizer:
    """Encode built prompts and decode generated ids exactly like ``Florence2Processor``."""

    def __init__(self, tokenizer: Tokenizer, source: str | Path = "<tokenizer>"):
        self._tok = tokenizer
        found = {t: tokenizer.token_to_id(t) for t in (BOS, PAD, EOS, UNK, IMAGE)}
        ids = {t: i for t, i in found.items() if i is not None}
        missing = [t for t in found if t not in ids]
        if missing:
            raise ModelFileError(source, f"not a Florence-2 tokenizer: no {', '.join(missing)} token")
        self.bos_token_id: int = ids[BOS]
        self.pad_token_id: int = ids[PAD]
        self.eos_token_id: int = ids[EOS]
        self.unk_token_id: int = ids[UNK]
        self.image_token_id: int = ids[IMAGE]
        self._tok.no_padding()
        self._tok.no_truncation()

    @classmethod
    def from_file(cls, path: str | Path) -> Florence2Tokenizer:
        """Load a ``tokenizer.json`` (as written by ``florence2 export``)."""
        return cls(read_tokenizer_file(path), path)

    @property
    def vocab_size(self) -> int:
        """Number of tokens, added tokens included (the model's embedding may have more rows)."""
        return self._tok.get_vocab_size(with_added_tokens=True)

    @property
    def backend(self) -> Tokenizer:
        return self._tok

    def token_to_id(self, token: str) -> int | None:
        return self._tok.token_to_id(token)

    def id_to_token(self, token_id: int) -> str | None:
        return self._tok.id_to_token(token_id)

    def encode_prompts(self, prompts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Built prompts -> (ids, attention_mask), both int64 [B, T]: ``<s> prompt </s>`` right-padded.

        Prepending ``num_image_tokens`` x ``image_token_id`` (mask 1) gives the processor's
        ``input_ids`` / ``attention_mask`` for ``padding=True``.
        """
        if isinstance(prompts, str):
            raise ValueError("encode_prompts takes a list of prompts, got a single string")
        if len(prompts) == 0:
            raise ValueError("encode_prompts needs at least one prompt")
        for i, p in enumerate(prompts):
            if not isinstance(p, str):
                raise ValueError(f"prompt {i} must be a string, got {type(p).__name__}")
        encodings = self._tok.encode_batch([BOS + p + EOS for p in prompts], add_special_tokens=False)
        length = max(len(e.ids) for e in encodings)
        ids = np.full((len(prompts), length), self.pad_token_id, dtype=np.int64)
        mask = np.zeros((len(prompts), length), dtype=np.int64)
        for row, e in enumerate(encodings):
            ids[row, : len(e.ids)] = e.ids
            mask[row, : len(e.ids)] = 1
        return ids, mask

    def batch_decode(self, ids) -> list[str]:
        """Token ids [B, L] (a 2-D array, or rows of any lengths) -> texts.

        Same as ``processor.batch_decode(ids, skip_special_tokens=False)``; ids the tokenizer does not
        know (the embedding's padding rows) decode to nothing, as there.
        """
        if isinstance(ids, np.ndarray) and ids.ndim != 2:
            raise ValueError(f"batch_decode expects a 2-D batch of token ids, got shape {ids.shape}")
        rows = [_as_id_list(row, i) for i, row in enumerate(ids)]
        return self._tok.decode_batch(rows, skip_special_tokens=False)

    def decode(self, ids: Sequence[int]) -> str:
        """One sequence of ids -> text (``skip_special_tokens=False``)."""
        return self.batch_decode([list(ids)])[0]

    def decode_with_offsets(self, ids: Sequence[int]) -> tuple[str, np.ndarray]:
        """``decode(ids)`` and where each token's characters are: int64 [T + 1] offsets, token ``k`` wrote
        ``text[offsets[k]:offsets[k + 1]]``.

        Byte-level BPE tokens decode on their own to their own characters, except where a character's
        UTF-8 bytes are split over several tokens: then the offsets come from decoding every prefix (the
        tokens of a split character share it: the first ones get no characters, the last one all)."""
        ids = _as_id_list(ids, 0)
        text = self.decode(ids)
        pieces = self._tok.decode_batch([[i] for i in ids], skip_special_tokens=False)
        if "".join(pieces) == text:
            return text, np.concatenate([[0], np.cumsum([len(p) for p in pieces])]).astype(np.int64)
        prefixes = self._tok.decode_batch([ids[: k + 1] for k in range(len(ids))], skip_special_tokens=False)
        ends = [_common_prefix(p, text) for p in prefixes]
        offsets = np.maximum.accumulate(np.array([0, *ends], dtype=np.int64))
        offsets[-1] = len(text)
        return text, offsets


def _common_prefix(a: str, b: str) -> int:
    """Length of the longest common prefix of ``a`` and ``b``."""
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def _as_id_list(row, index: int) -> list[int]:
    arr = np.asarray(row)
    if arr.ndim != 1:
        raise ValueError(f"row {index} of the token ids is not 1-D (shape {arr.shape})")
    if arr.size == 0:
        return []
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"token ids must be integers, got dtype {arr.dtype} in row {index}")
    top = np.iinfo(np.uint32).max
    if arr.min() < 0 or arr.max() > top:
        raise ValueError(f"token ids must be in 0..{top}, got {arr.min()}..{arr.max()} in row {index}")
    return arr.astype(np.int64).tolist()
