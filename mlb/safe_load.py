"""``torch.load`` for files users hand to mlb (checkpoints, encoder weights): never unpickles
an object that runs code, and every way a file can fail to load is one error naming it.

PyTorch's own message for a refused object suggests loading the file unsafely; only the
facts are kept, under either of the wordings PyTorch has used for it.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path

import torch

# "Unsupported global: GLOBAL os.system" / "unsupported GLOBAL posix.system whose module ..."
_UNSAFE = re.compile(r"[Uu]nsupported (?:global: )?GLOBAL (\S+)")
# Anything else a damaged, truncated or foreign file raises inside torch.load.
_UNREADABLE = (RuntimeError, EOFError, zipfile.BadZipFile, OSError, KeyError, ValueError,
               TypeError, IndexError, AttributeError, UnicodeDecodeError)


def load_tensors(path: Path, *, what: str, error: type[Exception] = ValueError) -> object:
    """``torch.load(path, weights_only=True)`` on the CPU; a refused object or an unreadable
    file raises ``error`` with one line that names ``path`` as the ``what`` it should be."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as failure:
        text = str(failure)
        unsafe = _UNSAFE.search(text)
        if unsafe is None:  # not an object that runs code: random bytes, a broken pickle
            detail = text.split("WeightsUnpickler error:", 1)[-1].strip().split("\n")[0]
            raise error(f"{path} is damaged or not a {what} (its pickle cannot be read: "
                        f"{detail[:200]})") from failure
        raise error(
            f"{path} is refused: it is not a safe {what} (it holds {unsafe.group(1)}, an "
            "object that would run code when loaded); mlb never loads such files") from failure
    except _UNREADABLE as failure:  # text or other files that are not torch files
        detail = " ".join(str(failure).split())[:200]
        raise error(f"{path} is damaged or not a {what}: {type(failure).__name__}"
                    f"{': ' + detail if detail else ''}") from failure
