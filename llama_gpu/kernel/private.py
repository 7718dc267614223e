"""Private files: state the server writes (database, secrets, job files) is for its own user only.

Folders are created ``0700`` and files ``0600`` whatever the umask; a folder the server
owns that others could enter is tightened to ``0700``. :func:`write_private` writes a new
file atomically: exclusive create of a temporary file, full write, ``fsync``, then a link
into place that never replaces an existing file, so concurrent writers agree on one content.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: str | os.PathLike[str], *, tighten: bool = True) -> Path:
    """``path`` as a folder created with mode 0700; ``tighten``: an existing one of ours becomes 0700 too."""
    folder = Path(path)
    folder.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    info = folder.stat()
    if tighten and info.st_uid == os.getuid() and info.st_mode & 0o077:
        os.chmod(folder, DIR_MODE)
    return folder


def touch_private(path: str | os.PathLike[str]) -> Path:
    """Create ``path`` empty with mode 0600 unless it exists (then leave it alone); a missing folder is made 0700."""
    target = Path(path)
    private_dir(target.parent, tighten=False)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
    return target


def write_private(path: str | os.PathLike[str], data: bytes | str, *, replace: bool = False) -> bool:
    """Write ``data`` to a new file ``path`` (mode 0600) atomically; whether this call wrote it.

    Without ``replace`` an existing ``path`` is kept (``False``): of several processes
    racing to create it, exactly one wins and the others read its content.
    """
    target = Path(path)
    folder = private_dir(target.parent)
    payload = data.encode() if isinstance(data, str) else data
    temporary = folder / f".{target.name}.{secrets.token_hex(8)}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        if replace:
            os.replace(temporary, target)
        else:
            try:
                os.link(temporary, target)  # a rename that refuses to replace an existing file
            except FileExistsError:
                return False
        _fsync_dir(folder)
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every file system can sync a folder
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
