"""Generation: greedy and beam search with numpy only, token-exact with transformers' ``generate()``.

:mod:`.options` (``DecodingOptions`` and its checks), :mod:`.logits` (logit filters, ``log_softmax``,
``top_k``), :mod:`.candidates` (beam search's top continuations of a step), :mod:`.scores` (token scores:
``GenerateOutput``, ``transition_scores``, ``scored_sequences``), :mod:`.search` (the ``Inference``
protocol the engines implement, greedy, beam search, ``generate``, ``generate_output``). The names below
are the layer's interface: the other layers import them from here.

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
from .scores import GenerateOutput, ScoredSequence, StepScores, scored_sequences, transition_scores
from .search import (
    PLACEHOLDER,
    BeamSearchDecoder,
    GreedyDecoder,
    Inference,
    NonFiniteLogitsError,
    Step,
    generate,
    generate_output,
    generate_scored,
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
    "GenerateOutput",
    "GreedyDecoder",
    "Inference",
    "LogitFilter",
    "MinNewTokens",
    "NoRepeatNGram",
    "NonFiniteLogitsError",
    "ScoredSequence",
    "Step",
    "StepScores",
    "build_logit_filters",
    "generate",
    "generate_output",
    "generate_scored",
    "log_softmax",
    "scored_sequences",
    "top_k",
    "transition_scores",
]
