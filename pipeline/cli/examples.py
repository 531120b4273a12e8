"""One example per subcommand, shown at the end of its --help (argparse epilog).

Paths follow the README's walkthrough: `make demo` writes runs/demo/, the demo checkpoint is
runs/demo/best (a link to the last demo run's best checkpoint).
"""

from __future__ import annotations

EXAMPLES: dict[str, str] = {
    "train": "erc train --features runs/demo/featureset/<name> --out runs/mine --model-preset tiny "
    "--modalities ta --seed 1 --set epochs=10",
    "evaluate": "erc evaluate --checkpoint runs/mine/best --features runs/demo/featureset/<name> "
    "--split dev",
    "grid": "erc grid --features runs/demo/featureset/<name> --out runs/grid --model-preset tiny "
    "--subsets tav,ta,t --seeds 0,1,2",
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


def epilog(command: str) -> str | None:
    example = EXAMPLES.get(command)
    return f"example:\n  {example}" if example else None
