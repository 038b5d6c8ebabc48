"""Checkpoints in, transformers model out: what the export reads before any graph is built.

- :mod:`.loading`: a transformers-native checkpoint (folder or hub id) loaded for export;
- :mod:`.original`: the original remote-code layout (microsoft/Florence-2-*), converted without running its code;
- :mod:`.adapters`: PEFT adapters (LoRA, ...) merged into the model, :mod:`.original_adapter` mapping those
  saved against the original layout;
- :mod:`.processor_config`: the processor files transformers 5 expects beside the weights;
- :mod:`.errors`: :class:`CheckpointError` and :class:`AdapterError`, raised by all of them.
"""
