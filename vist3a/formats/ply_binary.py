"""Binary PLY vertex tables at disk speed: our own header parser + numpy memmap / one write for the body.

plyfile (kept for ASCII files) reads binary bodies row by row unless memory-mapped and then still costs
seconds per million rows; a 3DGS PLY is one fixed-size record per Gaussian, so numpy can view the body
as a structured array directly. Errors are :class:`~vist3a.errors.PlyError`-style one-liners naming
the file, raised through the ``error`` callable the caller passes.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable, Iterator, Optional, Tuple

import numpy as np

__all__ = ["PlyHeader", "read_header", "vertex_table", "row_chunks", "header_bytes", "write_table"]

MAX_HEADER_BYTES = 1 << 20
_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2", "int16": "i2",
    "ushort": "u2", "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}
_FORMATS = {"ascii": None, "binary_little_endian": "<", "binary_big_endian": ">"}


@dataclass
class Element:
    name: str
    count: int
    properties: list  # [(name, numpy type code)] for scalars
    has_list: bool = False


@dataclass
class PlyHeader:
    format: str  # ascii | binary_little_endian | binary_big_endian
    elements: list
    size: int  # bytes up to and including the end_header line

    def element(self, name: str) -> Optional[Element]:
        return next((e for e in self.elements if e.name == name), None)


def read_header(path: Path, error: Callable[[str], Exception]) -> PlyHeader:
    """Parse the header of ``path``; raise ``error(message)`` for anything malformed."""
    with open(path, "rb") as f:
        head = f.read(MAX_HEADER_BYTES)
    if not head.startswith(b"ply") or head[3:4] not in (b"\n", b"\r"):
        raise error(f"{path} is not a PLY file (it does not start with the 'ply' magic line)")

    def bad(why: str) -> Exception:
        return error(f"{path} has a malformed or truncated PLY header ({why})")

    end = head.find(b"end_header")
    if end < 0:
        raise bad("no end_header line" + (" in the first 1 MiB" if len(head) == MAX_HEADER_BYTES else ""))
    stop = end + len(b"end_header")
    if head[stop:stop + 2] == b"\r\n":
        stop += 2
    elif head[stop:stop + 1] in (b"\n", b"\r"):
        stop += 1
    else:
        raise bad("end_header is not followed by a line break")
    try:
        text = head[:end].decode("ascii")
    except UnicodeDecodeError:
        raise bad("it contains bytes that are not ASCII") from None
    fmt, elements = None, []
    for number, raw in enumerate(text.replace("\r", "").split("\n")[1:], start=2):
        words = raw.split()
        if not words or words[0] in ("comment", "obj_info"):
            continue
        key = words[0]
        if key == "format" and len(words) == 3 and words[1] in _FORMATS and fmt is None:
            fmt = words[1]
        elif key == "element" and len(words) == 3:
            try:
                count = int(words[2])
            except ValueError:
                raise bad(f"line {number}: element count {words[2]!r} is not a number") from None
            if count < 0:
                raise bad(f"line {number}: negative element count")
            elements.append(Element(words[1], count, []))
        elif key == "property" and elements:
            el = elements[-1]
            if len(words) == 5 and words[1] == "list" and words[2] in _TYPES and words[3] in _TYPES:
                el.has_list = True
                el.properties.append((words[4], None))
            elif len(words) == 3 and words[1] in _TYPES:
                if any(name == words[2] for name, _ in el.properties):
                    raise bad(f"line {number}: property {words[2]!r} appears twice")
                el.properties.append((words[2], _TYPES[words[1]]))
            else:
                raise bad(f"line {number}: cannot read {raw.strip()[:60]!r}")
        else:
            raise bad(f"line {number}: cannot read {raw.strip()[:60]!r}")
    if fmt is None:
        raise bad("no valid 'format ascii|binary_little_endian|binary_big_endian 1.0' line")
    return PlyHeader(fmt, elements, stop)


def vertex_table(path: Path, header: PlyHeader, error: Callable[[str], Exception]) -> Optional[np.ndarray]:
    """The 'vertex' element of a binary PLY as a read-only structured memmap [count], or None when the
    file is ASCII or a list property precedes it (the caller falls back to plyfile)."""
    if header.format == "ascii":
        return None
    order = _FORMATS[header.format]
    offset = header.size
    for el in header.elements:
        if el.has_list:
            return None
        dtype = np.dtype([(name, order + code) for name, code in el.properties])
        if el.name == "vertex":
            need = dtype.itemsize * el.count
            have = path.stat().st_size - offset
            if have < need:
                raise error(f"{path} is truncated or corrupt: its {el.count} vertices need {need} bytes after the "
                            f"header, the file holds {max(have, 0)}")
            if el.count == 0 or dtype.itemsize == 0:
                return np.zeros(el.count, dtype)
            return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=(el.count,))
        offset += dtype.itemsize * el.count
    return None


CHUNK_BYTES = 8 << 20


def row_chunks(table: np.ndarray, chunk_bytes: Optional[int] = None) -> Iterator[Tuple[int, np.ndarray]]:
    """(first row, rows) of ``table`` in blocks of about ``chunk_bytes``, each in memory.

    A memmapped table is read with ``readinto`` (a sequential read is ~3x faster than faulting the
    mapping in page by page) into two buffers that take turns: a worker thread reads the next block
    while the caller copies its columns out of this one, still in cache. A block is valid until the
    caller asks for the next. Any other table (plyfile's, empty) is sliced.
    """
    n = len(table)
    rows = max(1, (chunk_bytes or CHUNK_BYTES) // max(table.dtype.itemsize, 1))
    if not isinstance(table, np.memmap) or table.filename is None:
        for start in range(0, n, rows):
            yield start, table[start:start + rows]
        return
    buffers = [np.empty(min(rows, n), dtype=table.dtype) for _ in range(2)]
    starts = range(0, n, rows)
    with open(table.filename, "rb", buffering=0) as f, ThreadPoolExecutor(1, thread_name_prefix="ply_read") as reader:
        f.seek(table.offset)

        def read(turn: int, start: int) -> np.ndarray:
            block = buffers[turn][:min(rows, n - start)]
            view = memoryview(block).cast("B")
            got = 0
            while got < len(view):
                step = f.readinto(view[got:])
                if not step:
                    raise EOFError(f"{table.filename} ended while reading vertex rows")  # checked before, so rare
                got += step
            return block

        ahead = reader.submit(read, 0, 0) if n else None
        for i, start in enumerate(starts):
            block = ahead.result()
            if i + 1 < len(starts):  # the other buffer's block was handed out before this one: it is free
                ahead = reader.submit(read, (i + 1) % 2, starts[i + 1])
            yield start, block


def header_bytes(count: int, names: list[str]) -> bytes:
    """A binary little-endian header with one float property per name (the layout plyfile writes)."""
    lines = ["ply", "format binary_little_endian 1.0", f"element vertex {count}"]
    lines += [f"property float {name}" for name in names]
    lines.append("end_header")
    return ("\n".join(lines) + "\n").encode("ascii")


def write_table(f: IO[bytes], table: np.ndarray) -> None:
    """Write the [N, P] little-endian float32 body in one call."""
    f.write(memoryview(np.ascontiguousarray(table, dtype="<f4")).cast("B"))
