"""One exporter per model-folder layout, each from the loaded torch model to a folder of ONNX graphs.

- :mod:`.native`: this project's layout (``florence2_config.json``, three graphs, ``embed_tokens.npy``,
  ``kv_gather.onnx``), the one the precision variants convert;
- :mod:`.onnx_community`: the onnx-community layout transformers.js reads (six graphs, transformers' configs);
- :mod:`.merge`: ``decoder_model_merged`` assembled from that layout's two decoder graphs.

Every exporter has the signature ``(model, processor, cfg, out, *, check, quiet) -> max |onnx - torch| per graph``;
:data:`florence2_export.pipeline.LAYOUT_EXPORTERS` picks one by name.
"""
