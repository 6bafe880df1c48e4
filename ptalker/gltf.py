"""glTF 2.0 binary (.glb) files: a short writer of morph-target animations and a reader of meshes with
named morph targets, both on numpy.

    write_glb(path, doc, binary)          # any glTF JSON + its BIN chunk
    glb = read_glb(path)                  # -> Glb(doc, binary); glb.accessor(i) -> numpy array

The container is a 12-byte header, a JSON chunk and a BIN chunk, each 4-byte aligned
(https://registry.khronos.org/glTF/specs/2.0/glTF-2.0.html#glb-file-format-specification).
"""
from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import UserError
from .fileio import atomic_path

MAGIC = 0x46546C67          # "glTF"
JSON_CHUNK = 0x4E4F534A     # "JSON"
BIN_CHUNK = 0x004E4942      # "BIN\0"
FLOAT = 5126
COMPONENT_DTYPES = {5120: np.int8, 5121: np.uint8, 5122: np.int16, 5123: np.uint16, 5125: np.uint32, 5126: np.float32}
COMPONENTS = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4, "MAT2": 4, "MAT3": 9, "MAT4": 16}
ARRAY_BUFFER, ELEMENT_ARRAY_BUFFER = 34962, 34963


# ---------------------------------------------------------------------------------------------- writing

@dataclass
class GlbBuilder:
    """Collects binary arrays as buffer views + accessors of one glTF document."""
    doc: dict = field(default_factory=lambda: {"asset": {"version": "2.0", "generator": "PTalker"},
                                               "buffers": [{"byteLength": 0}], "bufferViews": [], "accessors": []})
    binary: bytearray = field(default_factory=bytearray)

    def accessor(self, array: np.ndarray, kind: str, target: int | None = None, bounds: bool = False) -> int:
        """A float32 (N, C) or uint32 (N,) array -> the index of a new accessor on its own buffer view.

        bounds: store min/max (glTF requires them on POSITION and animation inputs)."""
        array = np.ascontiguousarray(array)
        dtype = np.uint32 if np.issubdtype(array.dtype, np.integer) else np.float32
        array = np.ascontiguousarray(array, dtype=dtype)
        view = {"buffer": 0, "byteOffset": len(self.binary), "byteLength": array.nbytes}
        if target is not None:
            view["target"] = target
        self.binary += array.tobytes()
        self.binary += b"\0" * (-len(self.binary) % 4)     # every view starts 4-byte aligned
        self.doc["bufferViews"].append(view)
        rows = array.reshape(len(array), -1)
        acc = {"bufferView": len(self.doc["bufferViews"]) - 1, "componentType": 5125 if dtype == np.uint32 else FLOAT,
               "count": len(array), "type": kind}
        if bounds:
            acc["min"] = [float(v) if dtype == np.float32 else int(v) for v in rows.min(axis=0)]
            acc["max"] = [float(v) if dtype == np.float32 else int(v) for v in rows.max(axis=0)]
        self.doc["accessors"].append(acc)
        return len(self.doc["accessors"]) - 1

    def finish(self) -> tuple[dict, bytes]:
        self.doc["buffers"][0]["byteLength"] = len(self.binary)
        return self.doc, bytes(self.binary)


def glb_bytes(doc: dict, binary: bytes) -> bytes:
    """A glTF JSON document and its BIN chunk -> the bytes of a .glb file."""
    text = json.dumps(doc, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 4)                  # the JSON chunk is padded with spaces
    binary = bytes(binary) + b"\0" * (-len(binary) % 4)
    chunks = struct.pack("<II", len(text), JSON_CHUNK) + text
    if binary:
        chunks += struct.pack("<II", len(binary), BIN_CHUNK) + binary
    return struct.pack("<III", MAGIC, 2, 12 + len(chunks)) + chunks


def write_glb(path: str | os.PathLike, doc: dict, binary: bytes) -> None:
    """Write a .glb all-or-nothing."""
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(glb_bytes(doc, binary))


def weights_animation(builder: GlbBuilder, node: int, weights: np.ndarray, fps: float, name: str) -> None:
    """Animate a node's morph weights (T, K): one LINEAR keyframe per frame at t / fps seconds."""
    weights = np.asarray(weights, np.float32)
    times = np.arange(len(weights), dtype=np.float32) / np.float32(fps)
    times_acc = builder.accessor(times, "SCALAR", bounds=True)
    values_acc = builder.accessor(weights.reshape(-1), "SCALAR")
    builder.doc.setdefault("animations", []).append({
        "name": name,
        "samplers": [{"input": times_acc, "output": values_acc, "interpolation": "LINEAR"}],
        "channels": [{"sampler": 0, "target": {"node": node, "path": "weights"}}],
    })


# ---------------------------------------------------------------------------------------------- reading

@dataclass
class Glb:
    """A parsed .glb: the JSON document and the BIN chunk."""
    doc: dict
    binary: bytes
    path: Path

    def accessor(self, index: int) -> np.ndarray:
        """Accessor `index` -> float32 (count, components) or (count,) for scalars; normalized integers
        are mapped to [-1, 1] / [0, 1] and sparse substitutions applied, as a renderer would."""
        try:
            acc = self.doc["accessors"][index]
            dtype = np.dtype(COMPONENT_DTYPES[acc["componentType"]]).newbyteorder("<")
            width = COMPONENTS[acc["type"]]
            count = int(acc["count"])
            data = (self._view_rows(acc, dtype, width, count) if "bufferView" in acc
                    else np.zeros((count, width), dtype))
            data = self._normalized(data, acc)
            if "sparse" in acc:
                data = self._sparse(acc["sparse"], data, dtype, width)
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise UserError(f"glb {self.path} is corrupt: accessor {index} cannot be read ({exc!r})") from exc
        return data[:, 0] if width == 1 else data

    def _view_rows(self, acc: dict, dtype: np.dtype, width: int, count: int, view_index=None, offset=None):
        view = self.doc["bufferViews"][acc["bufferView"] if view_index is None else view_index]
        if view.get("buffer", 0) != 0 or "uri" in self.doc["buffers"][view.get("buffer", 0)]:
            raise ValueError("only data embedded in the glb's BIN chunk can be read")
        start = view.get("byteOffset", 0) + (acc.get("byteOffset", 0) if offset is None else offset)
        element = dtype.itemsize * width
        stride = view.get("byteStride", element) or element
        end = start + stride * (count - 1) + element if count else start
        if end > view.get("byteOffset", 0) + view["byteLength"] or end > len(self.binary):
            raise ValueError("accessor runs past its buffer view")
        if count == 0:
            return np.zeros((0, width), dtype)
        raw = np.frombuffer(self.binary, np.uint8, count=end - start, offset=start)
        rows = np.lib.stride_tricks.as_strided(raw, (count, element), (stride, 1))   # interleaved views
        return np.ascontiguousarray(rows).view(dtype).reshape(count, width)

    @staticmethod
    def _normalized(data: np.ndarray, acc: dict) -> np.ndarray:
        if acc.get("normalized") and data.dtype.kind in "iu":
            top = float(np.iinfo(data.dtype).max)
            return np.maximum(data.astype(np.float32) / top, -1.0).astype(np.float32)
        return data.astype(np.float32)

    def _sparse(self, sparse: dict, data: np.ndarray, dtype: np.dtype, width: int) -> np.ndarray:
        n = int(sparse["count"])
        idx = sparse["indices"]
        idx_dtype = np.dtype(COMPONENT_DTYPES[idx["componentType"]]).newbyteorder("<")
        indices = self._view_rows({}, idx_dtype, 1, n, idx["bufferView"], idx.get("byteOffset", 0))[:, 0]
        values = self._view_rows({}, dtype, width, n, sparse["values"]["bufferView"],
                                 sparse["values"].get("byteOffset", 0))
        data = data.copy()
        data[indices.astype(np.int64)] = values
        return data


def read_glb(path: str | os.PathLike) -> Glb:
    """Parse a .glb's container and JSON; one-line UserError when it is missing or not a glb."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"glb file not found: {path}")
    data = path.read_bytes()
    try:
        magic, version, length = struct.unpack_from("<III", data, 0)
        if magic != MAGIC or version != 2:
            raise ValueError("not a glTF 2.0 binary (bad magic or version)")
        if length > len(data):
            raise ValueError(f"truncated: header says {length} bytes, file has {len(data)}")
        chunks, offset = {}, 12
        while offset < length:
            size, kind = struct.unpack_from("<II", data, offset)
            if offset + 8 + size > length:
                raise ValueError("a chunk runs past the end of the file")
            chunks.setdefault(kind, data[offset + 8: offset + 8 + size])
            offset += 8 + size
        doc = json.loads(chunks[JSON_CHUNK].decode("utf-8"))
        if not isinstance(doc, dict):
            raise ValueError("the JSON chunk is not an object")
    except (struct.error, KeyError, ValueError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is not a valid glb file: {exc}") from exc
    return Glb(doc, chunks.get(BIN_CHUNK, b""), path)
