"""Generation: greedy and beam search with numpy only, token-exact with transformers' ``generate()``.

:mod:`.options` (``DecodingOptions`` and its checks), :mod:`.logits` (logit filters, ``log_softmax``,
``top_k``), :mod:`.search` (the ``Inference`` protocol the engines implement, greedy, beam search,
``generate``). The names below are the layer's interface: the other layers import them from here.

May import: :mod:`florence2_runtime.errors` only (the model is reached through ``Inference``).
"""

from .logits import (
    NEG_INF,
    TORCH_CPU_LANES,
    ForcedBOS,
    ForcedEOS,
    LogitFilter,
    MinNewTokens,
    NoRepeatNGram,
    build_logit_filters,
    log_softmax,
    top_k,
)
from .options import DEFAULT_MAX_NEW_TOKENS, PROMPT_LENGTH, DecodingOptions
from .search import (
    PLACEHOLDER,
    BeamSearchDecoder,
    GreedyDecoder,
    Inference,
    NonFiniteLogitsError,
    Step,
    generate,
)

__all__ = [
    "DEFAULT_MAX_NEW_TOKENS",
    "NEG_INF",
    "PLACEHOLDER",
    "PROMPT_LENGTH",
    "TORCH_CPU_LANES",
    "BeamSearchDecoder",
    "DecodingOptions",
    "ForcedBOS",
    "ForcedEOS",
    "GreedyDecoder",
    "Inference",
    "LogitFilter",
    "MinNewTokens",
    "NoRepeatNGram",
    "NonFiniteLogitsError",
    "Step",
    "build_logit_filters",
    "generate",
    "log_softmax",
    "top_k",
]
