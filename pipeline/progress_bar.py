"""Progress bars that read well in a terminal and in a log file.

On a terminal: tqdm as usual. Otherwise (a file, a pipe, a CI log) tqdm's carriage-return
redraws become one endless line, so `progress_bar` returns a bar that prints a plain line at most
every ``interval`` seconds, plus one when it finishes.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

from tqdm.auto import tqdm

LINE_EVERY_S = 30.0


class _Discard:
    """Where tqdm's own cursor writes ('', '\\r', '\\n') go: LineBar writes its lines itself."""

    def write(self, _s: str) -> None:
        pass

    def flush(self) -> None:
        pass


class LineBar(tqdm):
    """tqdm that writes whole lines, at most one per ``interval`` seconds (and at close)."""

    def __init__(self, *args: Any, stream: TextIO | None = None, interval: float = LINE_EVERY_S,
                 **kwargs: Any):  # fmt: skip
        self.stream = stream or sys.stderr
        kwargs.update(file=_Discard(), mininterval=interval, miniters=1, ascii=True)
        super().__init__(*args, **kwargs)

    def set_postfix(self, ordered_dict=None, refresh: bool = True, **kwargs: Any) -> None:
        # No line of its own: the next periodic line (or the last) shows it.
        super().set_postfix(ordered_dict, refresh=False, **kwargs)

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        state = (self.n, self.postfix)
        if msg is None and state == getattr(self, "_last_state", None):
            return True  # close() after the last update: the same line again, minus the time
        self._last_state = state
        line = (self.__str__() if msg is None else msg).strip()
        if line:
            self.stream.write(line + "\n")
            self.stream.flush()
        return True


def progress_bar(*args: Any, **kwargs: Any) -> tqdm:
    """tqdm(*args, **kwargs) on a terminal, a LineBar when stderr is not one."""
    stream = kwargs.get("file") or sys.stderr
    if getattr(stream, "isatty", lambda: False)():
        return tqdm(*args, **kwargs)
    kwargs.pop("file", None)
    return LineBar(*args, stream=stream, **kwargs)
