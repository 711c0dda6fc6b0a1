"""What the CLI prints for an expected failure: one line that names the file and the remedy.

Expected failures are mlb's own (``UsageError``, ``ValueError`` and the label store's errors,
``FileNotFoundError``) and every ``OSError`` of the file system (read-only, full disk,
permission denied, a file where a folder is needed, a looping link): none is a bug of mlb, so
none gets a traceback.
"""

from __future__ import annotations

import errno
import re

from pydantic import ValidationError

from mlb.config import validation_text

_REMEDIES = {
    errno.ENOSPC: "the file system is full: free space and rerun (finished work is kept)",
    errno.EROFS: "the file system is read-only: write to another folder",
    errno.EACCES: "permission denied: make it accessible to this user or use another path",
    errno.EPERM: "permission denied: make it accessible to this user or use another path",
    errno.EISDIR: "a folder is where a file is expected: give a file path",
    errno.ENOTDIR: "a file is where a folder is expected: give a folder path",
    errno.EEXIST: "a file is where a folder is expected: give a folder path",
    errno.ELOOP: "a symbolic link loops: fix or remove the link",
}


def error_line(error: BaseException) -> str:
    """The single line printed after ``mlb COMMAND: error:``."""
    if isinstance(error, ValidationError):
        return " ".join(validation_text(error).split())
    text = re.sub(r"^\[Errno \d+\] ", "", str(error).strip())
    if "Original Traceback" in text:
        # An error re-raised by a DataLoader worker carries the worker's traceback: keep its
        # final line, the original message, without the exception's module path.
        last = [line for line in text.splitlines() if line.strip()][-1]
        match = re.fullmatch(r"[\w.]+: (.*)", last.strip())
        text = match.group(1) if match else last
    if isinstance(error, OSError) and error.filename is not None:
        # The OS's own wording ("[Errno 30] Read-only file system: 'x'") plus what to do.
        remedy = _REMEDIES.get(error.errno, "check the path and rerun")
        text = f"{error.strerror or text}: {error.filename}; {remedy}"
    return " ".join(text.split())
