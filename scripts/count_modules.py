"""How many project files a command touches: run `erc ARGS...` in this process, then count the
project modules (pipeline/, flows/, extractors/, model/) it imported.

    python scripts/count_modules.py [--list] predict VIDEO --checkpoint CK --out OUT
    -> "<n> project modules imported (erc exit status <rc>)" on stderr, the list with --list
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pipeline", "flows", "extractors", "model")


def project_modules() -> list[str]:
    """The imported modules whose file is under one of the project's packages, sorted."""
    out = []
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None)
        if path and Path(path).resolve().is_relative_to(ROOT) and name.split(".")[0] in PACKAGES:
            out.append(name)
    return sorted(out)


def main(argv: list[str]) -> int:
    show = "--list" in argv[:1]
    args = argv[1:] if show else argv
    sys.path.insert(0, str(ROOT))
    from pipeline.cli import main as erc

    try:
        rc = erc(args)
    except SystemExit as exc:
        rc = exc.code
    modules = project_modules()
    if show:
        print("\n".join(modules), file=sys.stderr)
    print(f"{len(modules)} project modules imported (erc exit status {rc})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
