"""Progress bars written to a file or a CI log: plain periodic lines, no carriage returns."""

from __future__ import annotations

import io
import subprocess
import sys

from pipeline.progress_bar import LineBar, progress_bar

SCRIPT = """
import time
from pipeline.progress_bar import progress_bar
bar = progress_bar(total=40, desc="work", unit="item")
for i in range(40):
    bar.update(1)
    bar.set_postfix(step=i)
    time.sleep(0.01)
bar.close()
"""


def test_a_command_writing_to_a_file_prints_plain_lines(tmp_path):
    log = tmp_path / "stderr.log"
    with open(log, "w") as err:
        subprocess.run([sys.executable, "-c", SCRIPT], stderr=err, check=True, timeout=60)
    text = log.read_text()
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    # the opening line and the final one; nothing in between at the default 30 s interval
    assert len(lines) == 2, lines
    assert lines[0].startswith("work:   0%") and "0/40" in lines[0]
    assert lines[-1].startswith("work: 100%") and "40/40" in lines[-1] and "step=39" in lines[-1]


def test_lines_come_at_most_once_per_interval():
    out = io.StringIO()
    bar = LineBar(total=3, desc="x", stream=out, interval=0.0)
    for _ in range(3):
        bar.update(1)
    bar.close()
    lines = out.getvalue().splitlines()
    # each state once: close() after the last update wrote "3/3" a second time
    assert [line.split("|")[-1].split()[0] for line in lines] == ["0/3", "1/3", "2/3", "3/3"]


def test_a_postfix_set_before_update_is_on_that_line():
    out = io.StringIO()
    bar = LineBar(total=2, desc="x", stream=out, interval=0.0)
    for epoch in (1, 2):
        bar.set_postfix(dev=epoch, refresh=False)
        bar.update(1)
    bar.close()
    assert [line.rsplit("dev=", 1)[-1] for line in out.getvalue().splitlines()[1:]] == ["1]", "2]"]


def test_a_terminal_gets_the_usual_bar_and_disable_is_kept():
    class Tty(io.StringIO):
        def isatty(self):
            return True

    assert type(progress_bar(total=1, file=Tty())) is not LineBar
    quiet = io.StringIO()
    bar = LineBar(total=2, stream=quiet, disable=True)
    bar.update(2)
    bar.close()
    assert quiet.getvalue() == ""
