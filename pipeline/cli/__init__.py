"""The `erc` command. Each area registers its own subcommands; argparse lives only here."""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

# One module per area; each has register(subparsers), adds the commands listed here and sets
# args.func on their parsers. `erc <command>` imports only the area of that command (the others'
# imports, media decoding, speech recognition, extractor presets, are not paid for); `erc --help`,
# an unknown command or no command builds them all.
AREAS = {
    "pipeline.cli.train": ("train", "evaluate", "grid", "finetune-text"),
    "pipeline.cli.extract": ("extract", "status", "gc", "store", "check-media"),
    "pipeline.cli.predict": ("predict",),
    "pipeline.cli.data": ("manifest", "import"),
    "pipeline.cli.export": ("export",),
}


# One example per subcommand, shown at the end of its --help. Paths follow the README's
# walkthrough: `make demo` writes runs/demo/; runs/demo/best links to its best checkpoint.
EXAMPLES: dict[str, str] = {
    "train": "erc train --features runs/demo/featureset/<name> --out runs/mine --model-preset tiny "
    "--modalities ta --seed 1 --set epochs=10",
    "evaluate": "erc evaluate --checkpoint runs/mine/best --features runs/demo/featureset/<name> "
    "--split dev",
    "grid": "erc grid --features runs/demo/featureset/<name> --out runs/grid --model-preset tiny "
    "--subsets tav,ta,t --seeds 0,1,2",
    "finetune-text": "erc finetune-text iemocap-shared --out models/mpnet-iemocap --epochs 3",
    "extract": "erc extract --manifest runs/demo/manifest.csv --store runs/store --preset "
    "offline --modalities tav --featureset runs/features",
    "status": "erc status --manifest runs/demo/manifest.csv --store runs/store --preset offline",
    "gc": "erc gc --store runs/store --manifest runs/demo/manifest.csv --dry-run",
    "store": "erc store verify --store runs/store",
    "check-media": "erc check-media --manifest runs/demo/manifest.csv --out runs/media-check",
    "predict": "erc predict my_videos/ --checkpoint runs/demo/best --out predictions",
    "manifest": "erc manifest iemocap --root /data/IEMOCAP_full_release --out iemocap.csv",
    "import": "erc import iemocap-shared --out features/iemocap --modalities ta",
}


class HelpFormatter(argparse.HelpFormatter):
    """Wraps descriptions as usual but keeps an "example:" epilog's lines as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text.startswith("example:"):
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


def parsed_by(parse: Callable[[str], T]) -> Callable[[str], T]:
    """An argparse ``type=`` from a parser that raises ValueError, so a bad value is refused with
    the parser's own message ("argument --modalities: modalities 'tx': expected ...") instead of
    argparse's "invalid value"."""

    def convert(text: str) -> T:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = parse.__name__
    return convert


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The `erc` parser; with ``argv``, only the area of its command is registered."""
    parser = argparse.ArgumentParser(
        prog="erc", description="Multimodal emotion recognition in conversation (Ada2I)."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", required=True)
    command = next((a for a in argv or () if not a.startswith("-")), None)  # -v is the only option
    areas = [area for area, commands in AREAS.items() if command in commands] or list(AREAS)
    for area in areas:
        before = set(subparsers.choices)
        importlib.import_module(area).register(subparsers)
        added = tuple(name for name in subparsers.choices if name not in before)
        if added != AREAS[area]:  # the table above is what lets a command load its area alone
            raise RuntimeError(f"{area} registers {added}, AREAS says {AREAS[area]}")
    for name, sub in subparsers.choices.items():  # an example at the end of each --help
        if sub.epilog is None and name in EXAMPLES:
            sub.epilog = f"example:\n  {EXAMPLES[name]}"
            sub.formatter_class = HelpFormatter
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv).parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    previous = _stop_cleanly_on_sigterm()
    try:
        return int(args.func(args) or 0)
    except (FileNotFoundError, ValueError) as exc:
        # Bad input: one clear line naming the file and the problem, no traceback.
        print(f"erc {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        # Every write is atomic (temp file + rename) and removes its temp file on the way out,
        # so what finished is kept and a rerun of the same command resumes from it.
        name = str(exc) or "SIGINT"
        print(
            f"erc {args.command}: interrupted ({name}); finished work is kept, "
            "unfinished files were removed: rerun the same command to resume",
            file=sys.stderr,
        )
        return 128 + (signal.SIGTERM if name == "SIGTERM" else signal.SIGINT)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _stop_cleanly_on_sigterm():
    """SIGTERM (a `kill`, a scheduler's stop) raises KeyboardInterrupt("SIGTERM") in the main
    thread, as Ctrl-C does, so temp files are removed and the worker pool is cancelled; by
    default the process died at once, with no message and `.part` files left behind.
    Returns the previous handler (None when not on the main thread, where none can be set)."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def stop(signum, frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)

    return signal.signal(signal.SIGTERM, stop)
