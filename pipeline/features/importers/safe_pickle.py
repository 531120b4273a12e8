"""A restricted unpickler for the published ERC feature pickles (authors' and MMSA files).

    read_pickle_restricted(path) -> object

Unpickling runs code named in the file. This Unpickler resolves only plain containers, numpy
arrays/dtypes/scalars and the two helpers old pickles need (`_codecs.encode`,
`copyreg._reconstructor` for containers); any other global (os.system, builtins.eval, torch
storages, user classes) stops the load with a ValueError naming the file and the global. It is
defence in depth: callers still read a pickle only when the user trusts it (--trust-pickle).
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

# Globals the restricted unpickler resolves; everything else is refused (defence in depth).
_BUILTINS = "list dict tuple set frozenset bytearray bytes str int float complex bool object slice"
_PY2_BUILTINS = "list dict tuple set frozenset bytearray str unicode int long float complex bool"
_ALLOWED_GLOBALS = {("builtins", n) for n in _BUILTINS.split()} | {
    ("__builtin__", n)  # Python 2 pickles (the community IEMOCAP/MELD files are py2)
    for n in _PY2_BUILTINS.split()
}
_ALLOWED_GLOBALS |= {
    ("collections", "OrderedDict"),
    ("collections", "defaultdict"),
    ("collections", "deque"),
    ("_codecs", "encode"),  # how protocol-2 pickles written by Python 3 store bytes
    ("copy_reg", "_reconstructor"),  # protocol 0/1 containers; the class is checked here too
    ("copyreg", "_reconstructor"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),  # numpy 1.x pickles; numpy 2 keeps a shim
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),  # protocol 5
    ("numpy._core.numeric", "_frombuffer"),
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the globals in _ALLOWED_GLOBALS; refuses the rest before anything runs."""

    def __init__(self, file: io.BufferedIOBase, path: Path):
        super().__init__(file, encoding="latin1")  # latin1: py2 numpy buffers load byte-exact
        self._path = path

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(
                f"{self._path}: the pickle refers to {module}.{name}, which is not allowed "
                "(only containers and numpy arrays are; the file may be unsafe or use an "
                "unsupported layout)"
            )
        return super().find_class(module, name)

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError(
            f"{self._path}: persistent ids (e.g. torch storages) are not supported"
        )


def read_pickle_restricted(path: str | Path) -> Any:
    """Unpickle with the allow-list above. Call only on files you trust; see the module doc."""
    path = Path(path)
    with open(path, "rb") as f:
        try:
            return _RestrictedUnpickler(f, path).load()
        except pickle.UnpicklingError as exc:
            msg = str(exc)
            raise ValueError(msg if msg.startswith(str(path)) else f"{path}: {msg}") from exc
        except (EOFError, ValueError, TypeError, AttributeError, IndexError) as exc:
            raise ValueError(f"{path}: not a readable feature pickle ({exc})") from exc
