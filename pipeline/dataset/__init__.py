"""Stage 1, dataset: raw datasets and media -> a manifest, and decoded segments.

In: a dataset folder (IEMOCAP, MELD, CMU-MOSEI, ../shared, a generic layout) or the generated
demo; video/audio files. Out: a manifest (one row per utterance: ids, speaker, times, text,
label, split, media paths) and, per requested segment, 16 kHz mono audio and sampled RGB frames.

Contracts owned: the manifest schema, its label sets and its errors (manifest.py,
`ManifestError`), the adapters' `load_dataset(name, root)` (adapters/), the streaming decoder
`iter_segments` / `probe` (media.py) and the media sanity report (check_media.py).
"""

from typing import Literal, get_args

# The manifest's split names as a type (argparse choices, flow parameter hints); manifest.py maps
# datasets' other spellings (valid, val, ...) onto them.
Split = Literal["train", "dev", "test"]
SPLITS: tuple[str, ...] = get_args(Split)
