"""Just enough of the ONNX protobuf format to read quantised weights and to write a one-node probe graph.

The runtime does not depend on the ``onnx`` package; :mod:`.int8cpu` needs two things from graph files:
the element type and values of the weights that integer ops multiply by (to tell an int8 recipe from the
graph), and a tiny ``MatMulInteger`` model to ask onnxruntime how this CPU multiplies. Field numbers
are those of ``onnx.proto``; tests check both directions against the ``onnx`` package (the probe graph:
``tests/runtime/test_int8cpu.py``; weights read off exported graphs: ``tests/export/test_int8_recipes.py``).
"""

from __future__ import annotations

import mmap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

UINT8, INT8, INT32 = 2, 3, 6  # TensorProto.DataType
NUMPY_TYPES = {UINT8: np.uint8, INT8: np.int8}

# message -> field numbers used here (onnx.proto)
MODEL_GRAPH, MODEL_IR_VERSION, MODEL_OPSET = 7, 1, 8
GRAPH_NODE, GRAPH_INITIALIZER, GRAPH_INPUT, GRAPH_OUTPUT = 1, 5, 11, 12
NODE_INPUT, NODE_OUTPUT, NODE_OP_TYPE, NODE_ATTRIBUTE = 1, 2, 4, 5
ATTR_GRAPH, ATTR_GRAPHS = 6, 11
TENSOR_DIMS, TENSOR_TYPE, TENSOR_INT32_DATA, TENSOR_NAME, TENSOR_RAW = 1, 2, 5, 8, 9
TENSOR_EXTERNAL, TENSOR_LOCATION = 13, 14


# ----------------------------------------------------------------------------- reading


def _varint(buf, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, i
        shift += 7


def fields(buf, start: int = 0, end: int | None = None) -> Iterator[tuple[int, int | tuple[int, int]]]:
    """(field number, value) of the message ``buf[start:end]``: an int for varints, ``(start, end)`` of the
    bytes for length-delimited fields; fixed-width fields are skipped."""
    i, end = start, len(buf) if end is None else end
    while i < end:
        key, i = _varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(buf, i)
            yield number, value
        elif wire == 2:
            n, i = _varint(buf, i)
            yield number, (i, i + n)
            i += n
        elif wire in (1, 5):
            i += 8 if wire == 1 else 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire} at byte {i}")


def _span(value: int | tuple[int, int]) -> tuple[int, int]:
    """A length-delimited field's ``(start, end)``; ValueError for a varint where bytes belong."""
    if not isinstance(value, tuple):
        raise ValueError(
            f"malformed ONNX protobuf: a varint ({value}) where a length-delimited field belongs"
        )
    return value


def _int(value: int | tuple[int, int]) -> int:
    """A varint field's value; ValueError for bytes where a number belongs."""
    if isinstance(value, tuple):
        raise ValueError(f"malformed ONNX protobuf: bytes {value} where a varint field belongs")
    return value


def _text(buf, value: int | tuple[int, int]) -> str:
    start, end = _span(value)
    return bytes(buf[start:end]).decode("utf-8")


@dataclass(frozen=True)
class Tensor:
    """An initializer's name, element type, shape and where its bytes are."""

    name: str
    data_type: int
    dims: tuple[int, ...]
    raw: tuple[int, int] | None  # span of raw_data in the graph file
    external: dict[str, str] | None  # location / offset / length, when stored outside
    int32_data: tuple[int, int] | None  # span of packed int32_data (small types stored as varints)


def _tensor(buf, span: tuple[int, int]) -> Tensor:
    name, dtype, external = "", 0, False
    dims: list[int] = []
    raw: tuple[int, int] | None = None
    ext: dict[str, str] = {}
    packed: tuple[int, int] | None = None
    for number, value in fields(buf, *span):
        if number == TENSOR_NAME:
            name = _text(buf, value)
        elif number == TENSOR_TYPE:
            dtype = _int(value)
        elif number == TENSOR_DIMS:
            dims += [value] if isinstance(value, int) else [v for _, v in _packed(buf, value)]
        elif number == TENSOR_RAW:
            raw = _span(value)
        elif number == TENSOR_INT32_DATA:
            packed = value if isinstance(value, tuple) else None  # a lone unpacked value: not read
        elif number == TENSOR_EXTERNAL:
            entry = dict(fields(buf, *_span(value)))
            ext[_text(buf, entry[1])] = _text(buf, entry[2]) if 2 in entry else ""
        elif number == TENSOR_LOCATION:
            external = value == 1
    return Tensor(name, dtype, tuple(dims), raw, ext if external else None, packed)


def _packed(buf, span) -> Iterator[tuple[int, int]]:
    i, end = span
    while i < end:
        v, i = _varint(buf, i)
        yield i, v


def _graph(buf, span: tuple[int, int], nodes: list, inits: dict) -> None:
    """Collect the nodes (op type, inputs) and initializers of a graph and of its subgraphs (If branches)."""
    for number, value in fields(buf, *span):
        if number == GRAPH_INITIALIZER:
            t = _tensor(buf, _span(value))
            inits[t.name] = t
        elif number == GRAPH_NODE:
            op, inputs = "", []
            for n, v in fields(buf, *_span(value)):
                if n == NODE_OP_TYPE:
                    op = _text(buf, v)
                elif n == NODE_INPUT:
                    inputs.append(_text(buf, v))
                elif n == NODE_ATTRIBUTE:
                    for a, g in fields(buf, *_span(v)):
                        if a in (ATTR_GRAPH, ATTR_GRAPHS):
                            _graph(buf, _span(g), nodes, inits)
            nodes.append((op, inputs))


class GraphFile:
    """An ONNX file, memory-mapped: its nodes ``[(op_type, inputs)]`` and initializers by name."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        with open(self.path, "rb") as f:
            self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if self.path.stat().st_size else b""
        self.nodes: list[tuple[str, list[str]]] = []
        self.initializers: dict[str, Tensor] = {}
        for number, value in fields(self._map):
            if number == MODEL_GRAPH:
                _graph(self._map, _span(value), self.nodes, self.initializers)

    def array(self, tensor: Tensor) -> np.ndarray | None:
        """The values of a uint8/int8 initializer (flat), from the file, its external data file or int32_data."""
        dtype = NUMPY_TYPES.get(tensor.data_type)
        if dtype is None:
            return None
        if tensor.raw is not None:
            return np.frombuffer(self._map, dtype, tensor.raw[1] - tensor.raw[0], tensor.raw[0])
        if tensor.external is not None:
            data = self.path.parent / tensor.external.get("location", "")
            offset = int(tensor.external.get("offset") or 0)
            length = tensor.external.get("length")
            count = int(length) if length else -1
            return np.fromfile(data, dtype, count=count, offset=offset)
        if tensor.int32_data is not None:
            return np.array(
                [
                    v - 256 if tensor.data_type == INT8 and v > 127 else v
                    for _, v in _packed(self._map, tensor.int32_data)
                ],
                dtype,
            )
        return np.zeros(0, dtype)


# ----------------------------------------------------------------------------- writing


def _uvarint(value: int) -> bytes:
    out = bytearray()
    while True:
        b = value & 0x7F
        value >>= 7
        out.append(b | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, value: bytes | str | int) -> bytes:
    if isinstance(value, int):
        return _uvarint(number << 3) + _uvarint(value)
    data = value.encode("utf-8") if isinstance(value, str) else value
    return _uvarint(number << 3 | 2) + _uvarint(len(data)) + data


def value_info(name: str, elem_type: int, shape: tuple[int, ...]) -> bytes:
    """A ValueInfoProto: a tensor input/output of fixed shape."""
    dims = b"".join(_field(1, _field(1, d)) for d in shape)  # TensorShapeProto.dim { dim_value }
    tensor_type = _field(1, elem_type) + _field(2, dims)  # TypeProto.Tensor
    return _field(1, name) + _field(2, _field(1, tensor_type))


def single_node_model(op_type: str, inputs: list[bytes], outputs: list[bytes], opset: int = 13) -> bytes:
    """A serialised ModelProto with one node ``op_type`` wired from the graph inputs to the graph outputs
    (``inputs`` / ``outputs``: :func:`value_info` messages, names ``in0, in1, ...`` / ``out0, ...``)."""
    node = b"".join(_field(NODE_INPUT, f"in{i}") for i in range(len(inputs)))
    node += b"".join(_field(NODE_OUTPUT, f"out{i}") for i in range(len(outputs))) + _field(
        NODE_OP_TYPE, op_type
    )
    graph = _field(GRAPH_NODE, node) + _field(2, "probe")
    graph += b"".join(_field(GRAPH_INPUT, v) for v in inputs) + b"".join(
        _field(GRAPH_OUTPUT, v) for v in outputs
    )
    opset_import = _field(1, "") + _field(2, opset)
    return _field(MODEL_IR_VERSION, 8) + _field(MODEL_OPSET, opset_import) + _field(MODEL_GRAPH, graph)
