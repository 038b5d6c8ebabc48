"""Random-weight Florence-2 checkpoints built offline (tests, the demo, full-size benchmarks).

``write_tiny_checkpoint(out_dir)`` writes a transformers-native checkpoint folder that
``Florence2ForConditionalGeneration.from_pretrained`` and ``AutoProcessor.from_pretrained`` load
without network access. The weights are random: outputs are meaningless but deterministic.

The tokenizer is a byte-level BPE trained in-process on a small English corpus, laid out like
Florence-2's: ``<s> <pad> </s> <unk>`` at 0-3, the BPE vocabulary, ``<mask>`` closing the base
vocabulary (as in BART), then the added tokens ``<od> </od> <ocr> </ocr> <loc_0>..<loc_999>``,
the 20 task tokens and ``<image>``, all added as special tokens like the published checkpoints.
For "base" and "large" the base vocabulary is padded to BART's 50265 entries so that every added
token has its real id (``<loc_0>`` = 50269, ``<image>`` = 51289) and the embedding matrix has the
real 51328 rows.
"""

from __future__ import annotations

import copy
import json
import math
import re
from pathlib import Path

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from ..checkpoints.processor_config import POST_PROCESSOR_CONFIG

# ----------------------------------------------------------------------------- published configs
# Values of the transformers-native checkpoints (florence-community/Florence-2-{base,large}).

_VISION_COMMON = {
    "depths": [1, 1, 9, 1],
    "patch_size": [7, 3, 3, 3],
    "patch_stride": [4, 2, 2, 2],
    "patch_padding": [3, 1, 1, 1],
    "patch_prenorm": [False, True, True, True],
    "window_size": 12,
    "drop_path_rate": 0.1,
    "max_position_embeddings": 50,
    "max_temporal_embeddings": 100,
}
_TEXT_COMMON = {
    "vocab_size": 51328,
    "activation_function": "gelu",
    "scale_embedding": False,
    "bos_token_id": 0,
    "pad_token_id": 1,
    "eos_token_id": 2,
    "decoder_start_token_id": 2,
    "forced_bos_token_id": 0,
    "forced_eos_token_id": 2,
    "is_encoder_decoder": True,
    "dropout": 0.1,
    "attention_dropout": 0.1,
    "activation_dropout": 0.1,
}

MODEL_CONFIGS: dict[str, dict] = {
    "base": {
        "vision_config": {
            **_VISION_COMMON,
            "embed_dim": [128, 256, 512, 1024],
            "num_heads": [4, 8, 16, 32],
            "num_groups": [4, 8, 16, 32],
            "projection_dim": 768,
        },
        "text_config": {
            **_TEXT_COMMON,
            "d_model": 768,
            "encoder_layers": 6,
            "decoder_layers": 6,
            "encoder_attention_heads": 12,
            "decoder_attention_heads": 12,
            "encoder_ffn_dim": 3072,
            "decoder_ffn_dim": 3072,
            "max_position_embeddings": 1024,
        },
        "image_size": 768,
    },
    "large": {
        "vision_config": {
            **_VISION_COMMON,
            "embed_dim": [256, 512, 1024, 2048],
            "num_heads": [8, 16, 32, 64],
            "num_groups": [8, 16, 32, 64],
            "projection_dim": 1024,
        },
        "text_config": {
            **_TEXT_COMMON,
            "d_model": 1024,
            "encoder_layers": 12,
            "decoder_layers": 12,
            "encoder_attention_heads": 16,
            "decoder_attention_heads": 16,
            "encoder_ffn_dim": 4096,
            "decoder_ffn_dim": 4096,
            "max_position_embeddings": 4096,
        },
        "image_size": 768,
    },
    "tiny": {
        "vision_config": {
            **_VISION_COMMON,
            "depths": [1, 1, 1, 1],
            "embed_dim": [16, 32, 48, 64],
            "num_heads": [1, 2, 3, 4],
            "num_groups": [1, 2, 3, 4],
            "projection_dim": 32,
        },
        "text_config": {
            **_TEXT_COMMON,
            "vocab_size": None,
            "d_model": 32,
            "encoder_layers": 2,
            "decoder_layers": 2,
            "encoder_attention_heads": 4,
            "decoder_attention_heads": 4,
            "encoder_ffn_dim": 64,
            "decoder_ffn_dim": 64,
            "max_position_embeddings": None,
        },
        "image_size": 128,
    },
}

GENERATION_CONFIG = {
    "bos_token_id": 0,
    "decoder_start_token_id": 2,
    "early_stopping": True,
    "eos_token_id": 2,
    "forced_bos_token_id": 0,
    "forced_eos_token_id": 2,
    "no_repeat_ngram_size": 3,
    "num_beams": 3,
    "pad_token_id": 1,
}

IMAGE_MEAN = [0.485, 0.456, 0.406]
IMAGE_STD = [0.229, 0.224, 0.225]

# ----------------------------------------------------------------------------- tokenizer layout

SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>"]  # ids 0..3
MASK_TOKEN = "<mask>"  # last id of the base vocabulary (50264 in BART)
BART_BASE_VOCAB = 50265
TASK_TOKENS = [
    "<cap>", "</cap>", "<ncap>", "</ncap>", "<dcap>", "</dcap>", "<grounding>", "</grounding>",
    "<seg>", "</seg>", "<sep>", "<region_cap>", "</region_cap>", "<region_to_desciption>",
    "</region_to_desciption>", "<proposal>", "</proposal>", "<poly>", "</poly>", "<and>",
]  # fmt: skip
IMAGE_TOKEN = "<image>"
LOC_TOKENS = [f"<loc_{i}>" for i in range(1000)]
ADDED_TOKENS = ["<od>", "</od>", "<ocr>", "</ocr>", *LOC_TOKENS, *TASK_TOKENS, IMAGE_TOKEN]
EMBEDDING_PAD_MULTIPLE = 64  # the converted checkpoints pad the embedding rows to a multiple of 64

TASK_PROMPT_SENTENCES = [
    "What is the text in the image?",
    "What is the text in the image, with regions?",
    "What does the image describe?",
    "Describe in detail what is shown in the image.",
    "Describe with a paragraph what is shown in the image.",
    "Locate the objects with category name in the image.",
    "Locate the objects in the image, with their descriptions.",
    "Locate the region proposals in the image.",
    "Locate the phrases in the caption:",
    "Locate in the image with mask",
    "What is the polygon mask of region",
    "Locate in the image.",
    "What is the region?",
    "What does the region describe?",
    "What text is in the region?",
]

_CAPTIONS = [
    "A red car parked on the side of a quiet street.",
    "A green apple and a yellow banana on a wooden table.",
    "Two people walking a dog in the park on a sunny day.",
    "A cat sleeping on a blue sofa next to a window.",
    "A man riding a bicycle down a city road.",
    "A woman holding an umbrella in the rain.",
    "A group of children playing football on the grass.",
    "A small boat floating on a calm lake at sunset.",
    "A plate of food with rice, chicken and vegetables.",
    "A tall building with many windows against a cloudy sky.",
    "The image shows a kitchen with white cabinets and a stove.",
    "The image shows a bird sitting on a tree branch.",
    "In this image we can see a person, a chair and a laptop on a desk.",
    "There is a sign with the text OPEN above the door of the shop.",
    "A black and white photo of an old train station.",
    "A close up of a flower with pink petals.",
    "A bus stopped at a traffic light near a crosswalk.",
    "A horse standing in a field with mountains in the background.",
    "A pizza with cheese and tomatoes on a round tray.",
    "Several cars and trucks driving on a busy highway.",
    "A person wearing a hat and sunglasses smiling at the camera.",
    "A bottle, a cup and a book lying on the floor.",
    "An airplane flying over the ocean under a clear sky.",
    "A stop sign at the corner of a street.",
    "Three sheep grazing on a hill covered in snow.",
    "A clock on the wall shows ten past two.",
    "The phrases in the caption describe a dog, a ball and a girl.",
    "This is a picture of a room with a bed, a lamp and a mirror.",
    "It is a photo of a street market with fruit and people.",
    "The objects are a keyboard, a mouse and a monitor.",
]
_WORDS = (
    "person people man woman boy girl child dog cat horse bird cow sheep elephant bear zebra giraffe car "
    "truck bus train boat airplane bicycle motorcycle chair table sofa bed desk lamp window door wall "
    "floor roof tree flower grass sky cloud sun water river lake sea beach mountain road street building "
    "house shop sign text word letter number red green blue yellow black white orange purple brown gray "
    "pink left right top bottom center small large big little old new young front back inside outside "
    "above below near behind between region regions object objects category name mask polygon caption "
    "phrase phrases description descriptions paragraph detail shown image picture photo describe locate "
    "proposal proposals what which where who how"
)


def _corpus() -> list[str]:
    words = _WORDS.split()
    word_lines = [" ".join(words[i : i + 8]) for i in range(0, len(words), 8)]
    return TASK_PROMPT_SENTENCES * 4 + _CAPTIONS * 2 + word_lines


def build_tokenizer(
    base_vocab_size: int | None = None, train_vocab_size: int = 800, corpus: list[str] | None = None
) -> Tokenizer:
    """A Florence-2-shaped byte-level BPE ``tokenizers.Tokenizer`` trained on a corpus (default: built in).

    base_vocab_size: entries before the added tokens, ``<mask>`` included (BART: 50265). ``None``
    keeps what training produced plus ``<mask>``; a larger value pads with unreachable filler
    tokens so that the added tokens land on the real Florence-2 ids. corpus: lines to learn the
    merges from (the task prompts are always added). Deterministic.
    """
    # the same model, pre-tokenizer and decoder as transformers' RobertaTokenizer (= BartTokenizer) rebuilds
    bpe = models.BPE(dropout=None, continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False)
    tok = Tokenizer(bpe)
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=train_vocab_size,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(
        _corpus() if corpus is None else TASK_PROMPT_SENTENCES * 4 + list(corpus), trainer=trainer
    )

    # Re-assemble as JSON: the trained vocab (+ fillers) + <mask>, then the added tokens in order.
    spec = json.loads(tok.to_str())
    vocab: dict[str, int] = spec["model"]["vocab"]
    n = len(vocab)
    if base_vocab_size is not None:
        if base_vocab_size < n + 1:
            raise ValueError(
                f"base_vocab_size={base_vocab_size} is smaller than the trained vocabulary + <mask> ({n + 1})"
            )
        for i in range(base_vocab_size - 1 - n):
            # "\u0120" is byte-level BPE's space: decodes to " filler{i}"; no merge ever produces it
            vocab[f"\u0120filler{i}"] = n + i
    vocab[MASK_TOKEN] = len(vocab)
    spec["model"]["vocab"] = vocab
    spec["added_tokens"] = []
    tok = Tokenizer.from_str(json.dumps(spec))

    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    tok.add_special_tokens([AddedToken(MASK_TOKEN, special=True, normalized=False, lstrip=True)])
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in ADDED_TOKENS])
    tok.post_processor = processors.RobertaProcessing(
        ("</s>", 2), ("<s>", 0), trim_offsets=True, add_prefix_space=False
    )
    return tok


# ----------------------------------------------------------------------------- checkpoint


def image_grid(image_size: int) -> int:
    """Side of the DaViT output grid: 7x7/s4/p3 then three 3x3/s2/p1 convolutions = ceil(size / 32)."""
    side = image_size
    for stride in (4, 2, 2, 2):
        side = (side + stride - 1) // stride
    return side


TINY_TEXT_POSITIONS = 256  # room for prompt or generated tokens beyond the image tokens ("tiny" only)


def _florence2_config(size: str, image_token_id: int, vocab_size: int, num_image_tokens: int):
    from transformers import Florence2Config

    spec = copy.deepcopy(MODEL_CONFIGS[size])
    text = spec["text_config"]
    text["vocab_size"] = vocab_size
    if text["max_position_embeddings"] is None:  # "tiny": image tokens + 256, rounded up to 64
        text["max_position_embeddings"] = -(-(num_image_tokens + TINY_TEXT_POSITIONS) // 64) * 64
    elif num_image_tokens >= text["max_position_embeddings"]:
        raise ValueError(
            f"{num_image_tokens} image tokens do not fit the {size} model's "
            f"{text['max_position_embeddings']} encoder positions: use a smaller image_size"
        )
    return Florence2Config(
        vision_config=spec["vision_config"], text_config=text, image_token_id=image_token_id
    )


_DECODER_SUBLAYER_OUT = re.compile(r"decoder\.layers\.\d+\.(self_attn\.out_proj|encoder_attn\.out_proj|fc2)$")


def _randomize_weights(model, seed: int) -> None:
    """Re-draw every weight so random outputs are not degenerate.

    transformers' init (normal, std 0.02) leaves the tied embeddings dominant: the decoder then copies
    its input token and ignores the image and the prompt. Instead: variance-preserving linear and conv
    weights, decoder sublayer outputs scaled x2 (so the residual copy of the input token fades through
    the post-LN layers), and token embeddings with norm ~3 so that logits are spread (std ~3).
    """
    import torch
    from torch import nn

    g = torch.Generator().manual_seed(seed)

    def normal_(t: torch.Tensor, std: float) -> None:
        t.copy_(torch.randn(t.shape, generator=g) * std)

    with torch.no_grad():
        for name, module in model.named_modules():
            if module is model.lm_head:
                continue  # tied to the token embeddings
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                fan_in = module.weight[0].numel()
                gain = 2.0 if _DECODER_SUBLAYER_OUT.search(name) else 1.0
                normal_(module.weight, gain / math.sqrt(fan_in))
                if module.bias is not None:
                    normal_(module.bias, 0.02)
            elif isinstance(module, nn.Embedding):
                normal_(module.weight, 3.0 / math.sqrt(module.weight.shape[1]))


def preprocessor_config(image_size: int) -> dict:
    """``preprocessor_config.json`` as the published checkpoints have it, for a square ``image_size``.

    ``do_convert_rgb`` is null there, which transformers 5 resolves to *no* RGB conversion.
    """
    grid = image_grid(image_size)
    side = {"height": image_size, "width": image_size}
    return {
        "image_processor_type": "CLIPImageProcessor",
        "do_resize": True,
        "size": dict(side),
        "resample": 3,
        "do_center_crop": False,
        "crop_size": dict(side),
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": list(IMAGE_MEAN),
        "image_std": list(IMAGE_STD),
        "do_convert_rgb": None,
        "image_seq_length": grid * grid + 1,
        "processor_class": "Florence2Processor",
    }


def _write_json(path: Path, obj: dict) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _save_tokenizer(tokenizer_object: Tokenizer, out: Path) -> None:
    """tokenizer.json + tokenizer_config.json (BartTokenizer with ``image_token``) via transformers itself."""
    from transformers import BartTokenizer

    tokenizer = BartTokenizer(
        tokenizer_object=tokenizer_object,
        model_max_length=1024,
        extra_special_tokens={"image_token": IMAGE_TOKEN},
    )
    tokenizer.save_pretrained(out)


def write_tiny_checkpoint(
    out_dir: str | Path,
    *,
    size: str = "tiny",
    image_size: int | None = None,
    seed: int = 0,
    vocab_size: int | None = None,
) -> Path:
    """Write a random-weight transformers-native Florence-2 checkpoint to ``out_dir``; return the folder.

    size: "tiny" (~0.37 M parameters, 128 px, 17 image tokens; its BART positions are sized as image
    tokens + 256, rounded up to 64), or "base" / "large" (the published architectures, 768 px, 577
    image tokens). image_size: square input side in pixels; the image token count follows as
    ceil(image_size / 32) ** 2 + 1. vocab_size: rows of the embedding matrix (default: the tokenizer's
    size for "tiny", 51328 for "base"/"large"); at least the tokenizer's size.
    Deterministic for a given ``seed``; overwrites the files it writes.
    """
    import torch
    from transformers import Florence2ForConditionalGeneration, GenerationConfig

    if size not in MODEL_CONFIGS:
        raise ValueError(f"size must be one of {sorted(MODEL_CONFIGS)}, got {size!r}")
    spec = MODEL_CONFIGS[size]
    image_size = int(image_size if image_size is not None else spec["image_size"])
    max_grid = spec["vision_config"]["max_position_embeddings"]
    if image_size < 1 or image_grid(image_size) > max_grid:
        raise ValueError(
            f"image_size must be in 1..{32 * max_grid} (a {max_grid}x{max_grid} grid at most), "
            f"got {image_size}"
        )

    tokenizer = build_tokenizer(base_vocab_size=None if size == "tiny" else BART_BASE_VOCAB)
    n_tokens = tokenizer.get_vocab_size(with_added_tokens=True)
    image_token_id = tokenizer.token_to_id(IMAGE_TOKEN)
    if image_token_id is None:
        raise ValueError(f"the tokenizer has no {IMAGE_TOKEN} token")
    if vocab_size is None:
        vocab_size = n_tokens if size == "tiny" else spec["text_config"]["vocab_size"]
    if vocab_size < n_tokens:
        raise ValueError(f"vocab_size={vocab_size} is smaller than the tokenizer ({n_tokens} tokens)")

    torch.manual_seed(seed)
    grid = image_grid(image_size)
    config = _florence2_config(size, image_token_id, vocab_size, grid * grid + 1)
    model = Florence2ForConditionalGeneration(config).eval()
    _randomize_weights(model, seed)
    model.generation_config = GenerationConfig(**GENERATION_CONFIG)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    _save_tokenizer(tokenizer, out)
    _write_json(out / "preprocessor_config.json", preprocessor_config(image_size))
    _write_json(
        out / "processor_config.json",
        {
            "processor_class": "Florence2Processor",
            "num_additional_image_tokens": 0,
            "post_processor_config": copy.deepcopy(POST_PROCESSOR_CONFIG),
        },
    )
    return out
