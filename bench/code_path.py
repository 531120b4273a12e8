"""How many project files a user's command runs through: `erc train` and `erc predict` on demo data.

    python -m bench.code_path                 # both commands, one JSON line each
    python -m bench.code_path --work DIR      # keep the demo data, features and run in DIR

A newcomer following a request reads the files its code runs in. This counts them for a real run:
each command runs in a fresh process under a profiler hook (sys.setprofile and
threading.setprofile) that sees every Python function call. Per command it prints:

- files: product files (pipeline/, flows/, extractors/, model/) whose functions ran (a module
  that is only imported does not count);
- modules: product modules imported;
- hops: calls that go from one product file into another (the reader changes file);
- returns_to_left: of those, hops into a file the request had already left before (a reader
  flipping back);
- calls: product function calls in all.

The demo data (six dialogues of four utterances, tiny extractors) is made with the project's own
commands, so the script runs on any checkout that has `erc extract`, `erc train`, `erc predict`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = ("pipeline", "flows", "extractors", "model")


def _product_file(filename: str) -> str | None:
    try:
        rel = Path(filename).resolve().relative_to(ROOT)
    except ValueError:
        return None
    product = rel.parts and rel.parts[0] in PRODUCT and rel.suffix == ".py"  # not templates
    return rel.as_posix() if product else None


def profile(argv: list[str]) -> dict:
    """Run ``erc argv`` in this process and count the product files its calls go through."""
    from pipeline.cli import main

    known: dict[str, str | None] = {}
    visited: list[str] = []  # product files in the order the request first entered them
    left: set[str] = set()
    counts = {"calls": 0, "hops": 0, "returns_to_left": 0}

    def hook(frame, event, arg):
        if event != "call":
            return
        filename = frame.f_code.co_filename
        if filename not in known:
            known[filename] = _product_file(filename)
        here = known[filename]
        if here is None or frame.f_code.co_name == "<module>":
            return  # imports are counted as modules, not as steps of the request
        counts["calls"] += 1
        if here not in visited:
            visited.append(here)
        caller = frame.f_back
        while (
            caller is not None
            and known.setdefault(
                caller.f_code.co_filename, _product_file(caller.f_code.co_filename)
            )
            is None
        ):
            caller = caller.f_back  # a library between two product files: skip it
        source = known[caller.f_code.co_filename] if caller is not None else None
        if source is not None and source != here:
            counts["hops"] += 1
            if here in left:
                counts["returns_to_left"] += 1
            left.add(source)

    sys.setprofile(hook)
    threading.setprofile(hook)
    try:
        code = main(argv)
    except SystemExit as stop:
        code = stop.code
    finally:
        sys.setprofile(None)
        threading.setprofile(None)
    modules = sorted(
        m for m, mod in list(sys.modules.items())
        if m.split(".")[0] in PRODUCT and getattr(mod, "__file__", None)
    )  # fmt: skip
    return {
        "exit": code,
        "files": len(visited),
        "modules": len(modules),
        **counts,
        "file_list": visited,
    }


def _run(argv: list[str]) -> dict:
    """`profile(argv)` in a fresh interpreter (so imports count from zero)."""
    out = subprocess.run(
        [sys.executable, "-m", "bench.code_path", "--profile", "--", *argv],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


ERC = [sys.executable, "-c", "import sys; from pipeline.cli import main; sys.exit(main())"]


def _erc(*argv: str) -> None:
    subprocess.run([*ERC, *argv], cwd=ROOT, check=True, capture_output=True)


def measure(work: Path) -> list[dict]:
    from pipeline.dataset.demo import make_demo_dataset

    manifest = make_demo_dataset(work / "demo", n_dialogues=6, utterances_per_dialogue=4, seed=0)
    store, features, run = work / "store", work / "features", work / "run"
    _erc("extract", "--manifest", str(manifest), "--store", str(store), "--preset", "tiny",
         "--modalities", "tav", "--featureset", str(features), "--no-progress")  # fmt: skip
    featureset = next(p.parent for p in features.rglob("meta.json"))
    help_text = subprocess.run([*ERC, "train", "--help"],
                               cwd=ROOT, capture_output=True, text=True).stdout  # fmt: skip
    preset_flag = "--model-preset" if "--model-preset" in help_text else "--preset"
    train = ["train", "--features", str(featureset), "--out", str(run), preset_flag, "tiny",
             "--set", "epochs=2", "--no-resume"]  # fmt: skip
    videos = sorted(str(p) for p in (work / "demo").rglob("*.mp4"))
    predict = ["predict", *videos, "--checkpoint", str(run / "best"), "--out",
               str(work / "predictions"), "--manifest", str(manifest), "--store", str(store),
               "--no-progress"]  # fmt: skip
    rows = []
    for name, argv in (("erc train", train), ("erc predict", predict)):
        rows.append({"command": name, **_run(argv)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, help="keep the data and runs here")
    parser.add_argument("--files", action="store_true", help="also print each file list")
    parser.add_argument("--profile", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("argv", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.profile:
        print(json.dumps(profile(args.argv)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for row in measure(work):
            if not args.files:
                row.pop("file_list")
            print(json.dumps(row))


if __name__ == "__main__":
    main()
