"""What a file is: a safetensors header, or one phrase naming what it is instead (an HTML page, a
Git LFS pointer, a PyTorch pickle, a ZIP, text, nothing) and what was expected.

The header is parsed here rather than through ``safetensors.safe_open``: the byte count it implies
is what tells a truncated download from a corrupt file in the error, and safe_open's own error for
both is one opaque word (``MetadataIncompleteBuffer``). The header read is cached by the file's
identity (device, inode, size, mtime), so a driver that checks, describes and then loads the same
file reads and parses it once; a file replaced in place (``os.replace``) is a new inode.
"""

from __future__ import annotations

import functools
import json
import os
import struct
import zipfile
from pathlib import Path
from typing import Any

from dotseg.checkpoint.meta import CheckpointError

#: A safetensors header is JSON describing the tensors; a longer one means the file is something else.
_MAX_HEADER_BYTES = 100 * 1024 * 1024
_SNIFF_BYTES = 4096


def read_header(path: Path) -> tuple[dict[str, Any], int]:
    """The safetensors header of ``path`` (do not modify it: it is shared) and the total file size
    it implies, or a CheckpointError naming what the file is."""
    if not path.exists():
        raise CheckpointError(f"{path}: no such file (expected a dotseg checkpoint, *.safetensors)")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory, not a dotseg checkpoint (expected a *.safetensors file)")
    try:
        st = path.stat()
    except OSError as e:
        raise CheckpointError(f"{path}: cannot be read: {e.strerror or e}") from None
    return _read_header(path, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=32)
def _read_header(path: Path, _dev: int, _ino: int, _size: int, _mtime_ns: int) -> tuple[dict[str, Any], int]:
    try:
        with open(path, "rb") as f:
            head = f.read(_SNIFF_BYTES)
            size = os.fstat(f.fileno()).st_size
            if _looks_like_safetensors(head):
                (n,) = struct.unpack("<Q", head[:8])
                if 8 + n > size:
                    raise CheckpointError(
                        f"{path}: truncated safetensors file: its header needs {8 + n} bytes, "
                        f"the file has {size} (an interrupted download or copy?)"
                    )
                f.seek(8)
                raw = f.read(n)
    except OSError as e:
        raise CheckpointError(f"{path}: cannot be read: {e.strerror or e}") from None
    if not _looks_like_safetensors(head):
        raise CheckpointError(f"{path}: {_what_is_it(path, head, size)}")
    try:
        header = json.loads(raw)
        assert isinstance(header, dict)
        ends = [int(info["data_offsets"][1]) for k, info in header.items() if k != "__metadata__"]
        for k, info in header.items():
            if k != "__metadata__":
                assert isinstance(info["shape"], list)
    except Exception:
        raise CheckpointError(f"{path}: corrupt safetensors header (not the JSON tensor table it should be)") from None
    return header, 8 + n + max(ends, default=0)


def _looks_like_safetensors(head: bytes) -> bool:
    """An 8-byte little-endian header length (sane) followed by the header's opening brace."""
    if len(head) < 9 or head[8:9] != b"{":
        return False
    (n,) = struct.unpack("<Q", head[:8])
    return 2 <= n <= _MAX_HEADER_BYTES


def _what_is_it(path: Path, head: bytes, size: int) -> str:
    """One phrase naming what a non-safetensors file is, and what was expected instead."""
    if size == 0:
        return "is empty (0 bytes), not a dotseg checkpoint (an interrupted download or copy?)"
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        if _zip_is_torch(path):
            return _pickle_message("a torch.save zip archive")
        return "is a ZIP archive, not a dotseg checkpoint (expected a *.safetensors file)"
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return _pickle_message("a pickle, as legacy torch.save writes")
    text = _as_text(head)
    if text is not None:
        lower = text.lstrip("\ufeff \t\r\n").lower()
        if lower.startswith("<!doctype html") or "<html" in lower[:1024]:
            return (
                "is an HTML page, not a dotseg checkpoint — a download that returned a web page? "
                "(e.g. a hub URL without ?download=true)"
            )
        if lower.startswith("version https://git-lfs"):
            return (
                "is a Git LFS pointer, not the checkpoint itself — fetch the real file "
                "(git lfs pull) or download it directly"
            )
        first = next((line.strip() for line in text.splitlines() if line.strip()), "")
        return f"is a text file (starts {first[:60]!r}), not a dotseg checkpoint (expected a *.safetensors file)"
    return (
        f"is not a safetensors file (starts with bytes {head[:8].hex(' ')}); "
        "expected a dotseg checkpoint (*.safetensors) — corrupt, or another format?"
    )


def _pickle_message(kind: str) -> str:
    return (
        f"is a PyTorch pickle ({kind}), which dotseg never loads because unpickling can run code; "
        "to convert a file you trust, load it yourself with torch.load(path, weights_only=True), "
        "put the state dict into build_model(cfg.model) and write it with "
        "dotseg.checkpoint.save_checkpoint"
    )


def _zip_is_torch(path: Path) -> bool:
    """True if the ZIP's directory lists a ``data.pkl`` (torch.save's layout); reads names only."""
    try:
        with zipfile.ZipFile(path) as zf:
            return any(n == "data.pkl" or n.endswith("/data.pkl") for n in zf.namelist())
    except (zipfile.BadZipFile, OSError):
        return path.suffix in (".pt", ".pth", ".bin", ".ckpt")


def _as_text(head: bytes) -> str | None:
    """``head`` decoded as UTF-8 if it looks like text (no NULs; a multibyte char cut by our read is fine)."""
    if b"\x00" in head:
        return None
    try:
        return head.decode("utf-8")
    except UnicodeDecodeError as e:
        if len(head) == _SNIFF_BYTES and e.start >= len(head) - 3:  # we cut the file inside a character
            return head[: e.start].decode("utf-8")
        return None
