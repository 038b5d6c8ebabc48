"""The runtime against transformers: token ids, scores, preprocessing, tokenizer, prompts, post-processing,
transformers.js; every test here carries the ``parity`` marker."""
