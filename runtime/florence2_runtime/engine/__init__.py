"""The ONNX engine: what a model folder holds and how onnxruntime runs it.

Graph declarations (:mod:`.graphs`, the tensor names and shapes both halves share), the runtime config of a
folder (:mod:`.config`), hub resolution of a folder (:mod:`.hub`), the two folder layouts (:mod:`.layouts`:
:mod:`.native`, :mod:`.onnx_community`), execution providers (:mod:`.providers`, :mod:`.tensorrt`; :mod:`.openvino`, the openvino package behind
onnxruntime's session methods), int8
checks (:mod:`.int8cpu`, :mod:`.onnxproto`) and the :class:`~.interface.Engine` interface with its two
implementations: host sessions (:class:`~.host.HostEngine`) and IO binding on the device
(:class:`~.iobinding.DeviceEngine`).

May import: :mod:`florence2_runtime.errors`, :mod:`florence2_runtime.generation` (the ``Inference``
protocol it implements) and :mod:`florence2_runtime.inputs` (the tokenizer a folder ships).
"""
