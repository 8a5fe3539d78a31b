"""Durable file replacement: write beside the target, fsync, rename, fsync the folder.

A rename alone is atomic but not durable: after a power loss the new name can point at a
file whose blocks never reached the disk (an empty or truncated Parquet file). Syncing the
file before the rename, and the folder after it, makes the new content survive a crash
once the call returns; before that, the old content stays whole.
"""

from __future__ import annotations

import math
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def fsync_path(path: Path) -> None:
    """Flush a file's (or a folder's) content and metadata to disk."""
    flags = os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0)
    descriptor = os.open(path, flags)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def replace_durably(temporary: Path, path: Path) -> None:
    """Rename a fully written ``temporary`` over ``path``, synced before and after.

    Args:
        temporary: The new content, in the same folder as ``path`` (rename is atomic
            only within one file system).
        path: The file to replace (or create).
    """
    fsync_path(temporary)
    os.replace(temporary, path)
    fsync_path(path.parent)


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path``; on success it durably replaces ``path``.

    Write the new content to the yielded path. If the block raises, ``path`` is left as it
    was and the temporary file is removed.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        yield temporary
        replace_durably(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def write_text_atomically(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` (UTF-8), durably and all at once."""
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8")


def finite_json(value: Any) -> Any:
    """Replace NaN and infinities (not valid JSON) by null, recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [finite_json(item) for item in value]
    return value
