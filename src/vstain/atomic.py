"""Atomic file writes: a temporary file beside the destination, renamed into place on success.

A crash or an exception never leaves a half-written file under a real name, and never destroys
the previous version of the file. A process killed outright (``kill -9``) can leave its temporary
file, ``.<name>.<random>.part``, beside the destination; :func:`remove_stale_parts` clears those
when the work is redone.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

_PART_SUFFIX = ".part"


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``.

    On an exception the temporary file is removed and ``path`` is left as it was.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=_PART_SUFFIX, dir=target.parent)
    os.close(fd)
    # mkstemp creates 0600 files; give the result the permissions a plain open() would.
    umask = os.umask(0)
    os.umask(umask)
    mode = 0o666 & ~umask
    os.chmod(tmp, mode)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # Again after writing: some writers (safetensors) replace the file with one of their own.
        os.chmod(tmp_path, mode)
        os.replace(tmp_path, target)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file + rename)."""
    target = Path(path)
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    return target


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically (temporary file + rename)."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def remove_stale_parts(folder: str | os.PathLike[str], names: Iterable[str]) -> list[Path]:
    """Delete temporary files that interrupted :func:`atomic_path` writes of ``names`` left in ``folder``.

    Only the temporaries of the given destination names are touched, so a caller that owns
    those names (e.g. the fields one predict process writes) never removes another process's
    file in flight.

    Returns
    -------
    list of pathlib.Path
        The files removed.
    """
    wanted = set(names)
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return removed
    for entry in entries:
        name = entry.name
        if not (name.startswith(".") and name.endswith(_PART_SUFFIX)) or not entry.is_file(follow_symlinks=False):
            continue
        destination = name[1 : -len(_PART_SUFFIX)].rpartition(".")[0]  # drop mkstemp's random part
        if destination in wanted:
            Path(entry.path).unlink(missing_ok=True)
            removed.append(Path(entry.path))
    return removed
