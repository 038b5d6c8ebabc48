"""The graphs themselves: torch modules that become ONNX graphs, and how they are written to files.

- :mod:`.modules`: ``Florence2ForConditionalGeneration`` cut into the graphs of :mod:`florence2_runtime.engine.graphs`
  (the references every exported graph is checked against);
- :mod:`.vision`: the DaViT vision encoder written for onnxruntime's CPU kernels (same function);
- :mod:`.to_onnx`: one torch module traced into one ONNX file, with the names and axes of its ``GraphSpec``;
- :mod:`.onnxfile`: how the native layout stores a graph (weights beside it in ``NAME.onnx_data``);
- :mod:`.gather`: the ``kv_gather`` helper graph, built from its description without torch.
"""
