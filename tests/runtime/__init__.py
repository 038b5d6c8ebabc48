"""Tests of the runtime alone (numpy, onnxruntime, tokenizers, Pillow): they pass with torch and transformers
unimportable (``FLORENCE2_TESTS_BLOCK_TORCH=1``) on the model folders committed under ``tests/data/models``."""
