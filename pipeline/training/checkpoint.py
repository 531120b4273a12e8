"""Checkpoints: weights in safetensors + a JSON with everything needed to rebuild and use them.

A checkpoint directory holds model.safetensors and checkpoint.json
({format, model_config, label_names, feature_spec, weights_sha256, ..., content_sha256}). Loading
never unpickles, so a checkpoint from anywhere is safe to open; it loads on CPU or GPU without the
training data. Everything its meaning depends on is verified on load: checkpoint.json against its
own content_sha256 (an edited label name, swapped labels or a changed cosine_scale would make
predictions wrong while looking fine), the weights against weights_sha256 (a truncated or
overwritten file is refused, naming it), and every tensor finite. Files are written with pipeline/files.py (atomic, the ordinary umask
mode: a checkpoint folder is meant to be copied to other machines and users).

A checkpoint folder is laid out as a model repository on the Hugging Face Hub (safetensors weights,
a JSON config, a README.md model card), so it is published with ``hf upload ORG/NAME FOLDER`` and
loaded back by its repo id: load_checkpoint("ORG/NAME") or ("ORG/NAME@REVISION") fetches the three
files into the Hub cache (where a network exists; offline, HF_HUB_OFFLINE=1, from that cache) and
verifies them exactly as a local folder. A path that exists is always a folder, never a repo id.

Here in training, not in model/: model/ is the network alone and imports nothing of pipeline, while
a checkpoint is written atomically with the shared helper; inference loads it (a later stage).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_bytes
from safetensors.torch import save_file

from model.ada2i import Ada2I
from model.config import Ada2IConfig
from pipeline.files import atomic_write, sha256_file

log = logging.getLogger(__name__)

FORMAT = "ada2i-erc.checkpoint/1"
CARD_FILE = "README.md"  # the model card, as on the Hugging Face Hub: documentation, not verified
DIGEST_KEY = "content_sha256"  # of checkpoint.json's other keys (weights_sha256 among them)
WEIGHTS_FILE = "model.safetensors"
META_FILE = "checkpoint.json"


def save_checkpoint(directory: str | Path, model: Ada2I, **meta: Any) -> Path:
    """meta: label_names, feature_spec, train_config, epoch, metrics, ... (JSON-serialisable)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    body = {
        "format": FORMAT,
        "model_config": model.cfg.to_dict(),
        **meta,
        # weights first, JSON last: the JSON's hash always describes a complete weights file
        "weights_sha256": save_tensors(directory / WEIGHTS_FILE, state),
    }
    body[DIGEST_KEY] = meta_digest(body)
    atomic_write(directory / META_FILE, lambda p: Path(p).write_text(json.dumps(body, indent=1)))
    write_model_card(directory, body)
    return directory


# Licences of the datasets a checkpoint may have been trained on: the weights carry their terms.
DATASET_TERMS = {
    "iemocap": "IEMOCAP (USC SAIL licence: research use only, no redistribution)",
    "meld": "MELD (GPL-3.0)",
    "mosei": "CMU-MOSEI (CMU's terms of use)",
}


def write_model_card(
    directory: Path, meta: dict[str, Any], test_metrics: dict | None = None
) -> Path:
    """README.md beside the weights, as a model hub shows it: what the model predicts, from which
    features, trained on what, how well, under which terms, and how to use it."""
    cfg, data = meta.get("model_config", {}), meta.get("training_data") or {}
    labels = meta.get("label_names", [])
    spec = meta.get("feature_spec", {})
    lines = [
        f"# Ada2I emotion recognition in conversation ({cfg.get('modalities', '?')})",
        "",
        f"Predicts one of {len(labels)} emotions per utterance: {', '.join(labels)}. "
        f"Ada2I (ACM MM 2024), hidden size {cfg.get('hidden')}, trained to epoch "
        f"{meta.get('epoch', '?')}.",
        "",
        "## Input features",
        "",
    ]
    for m, s in spec.items():
        names = ", ".join(
            f"{e.get('name')} {e.get('version')} ({e.get('model') or 'no model'})"
            for e in s.get("extractors", [])
        )
        lines.append(f"- {m}: {s.get('dim')}-d, {names or 'imported features (not extractable)'}")
    lines += ["", "## Training data", ""]
    if data:
        lines.append(f"- {data.get('description') or data.get('source') or 'unnamed feature set'}")
        lines.append(
            f"- {data.get('n_dialogues')} dialogues, {data.get('n_utterances')} utterances "
            f"({data.get('n_labelled')} labelled); feature set sha256 "
            f"{str(data.get('featureset_sha256', ''))[:12]}…"
        )
        if data.get("generated"):
            lines.append(
                f"- **Generated data ({data['generated']}): its predictions on real speech mean "
                "nothing.**"
            )
    else:
        lines.append("- not recorded")
    scores = test_metrics or meta.get("dev_metrics") or {}
    if scores:
        split = "test" if test_metrics else "dev (the checkpoint was chosen on it)"
        lines += ["", "## Results", "", f"On the {split} split:"]
        lines += [
            f"- {k.replace('_', ' ')}: {scores[k]:.4f}"
            for k in ("accuracy", "weighted_f1", "macro_f1")
            if isinstance(scores.get(k), float)
        ]
    text = f"{data.get('source', '')} {data.get('featureset', '')}".lower()
    terms = [t for key, t in DATASET_TERMS.items() if key in text]
    lines += [
        "",
        "## Terms",
        "",
        "The weights are derived from their training data and carry its terms: "
        + ("; ".join(terms) if terms else "check the licence of the data named above")
        + ".",
        "",
        "## Use",
        "",
        "```bash",
        f"erc predict VIDEO.mp4 --checkpoint {directory}",
        f"hf upload ORG/NAME {directory}          # publish it as a Hub model repository",
        "erc predict VIDEO.mp4 --checkpoint ORG/NAME   # ... and predict with it anywhere",
        "```",
        "",
        f"Integrity: `{META_FILE}` and `{WEIGHTS_FILE}` are verified on load (sha256); this card "
        "is documentation only.",
        "",
    ]
    path = Path(directory) / CARD_FILE
    atomic_write(path, lambda p: Path(p).write_text("\n".join(lines)))
    return path


# ORG/NAME with an optional @REVISION (a branch, tag or commit): a Hub model repository
HUB_REPO = re.compile(r"(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)(?:@(?P<revision>[\w./-]+))?")


class CheckpointUnavailableError(FileNotFoundError):
    """Neither a checkpoint folder here nor a Hub repository that could be fetched."""


def checkpoint_folder(name_or_path: str | Path) -> Path:
    """The folder a checkpoint argument names: a local folder as given, or a Hub repo id
    (ORG/NAME[@REVISION]) fetched (checkpoint.json, model.safetensors, README.md) into the Hub
    cache. A local path that does not exist and is not a repo id comes back as it is (the loader
    then says it is missing)."""
    path = Path(name_or_path).expanduser()
    hub = HUB_REPO.fullmatch(str(name_or_path))
    if path.exists() or hub is None:
        return path
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        folder = snapshot_download(
            hub["repo"], revision=hub["revision"],
            allow_patterns=[META_FILE, WEIGHTS_FILE, CARD_FILE],
            # offline, say so: given a commit as revision it would still ask the Hub for its files
            local_files_only=constants.HF_HUB_OFFLINE,
        )  # fmt: skip
    except LocalEntryNotFoundError as exc:
        raise CheckpointUnavailableError(
            f"{name_or_path}: no such checkpoint folder here, and the Hub repository "
            f"{hub['repo']!r} is not in the Hub cache while offline (HF_HUB_OFFLINE=1, or no "
            "network): download it where a network exists or pass a checkpoint folder"
        ) from exc
    except (HfHubHTTPError, OSError, ValueError) as exc:
        raise CheckpointUnavailableError(
            f"{name_or_path}: no such checkpoint folder here, and the Hub repository could not "
            f"be fetched ({type(exc).__name__}: {exc})"
        ) from exc
    return Path(folder)


def read_checkpoint_meta(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / META_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not a checkpoint (no {META_FILE})")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: invalid JSON ({exc})") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise ValueError(f"{path}: unknown checkpoint format {found!r}, expected {FORMAT}")
    verify_meta(meta, path)
    return meta


def meta_digest(meta: dict[str, Any]) -> str:
    """sha256 of a checkpoint JSON's canonical form, without its own digest."""
    rest = {k: v for k, v in meta.items() if k != DIGEST_KEY}
    return hashlib.sha256(json.dumps(rest, sort_keys=True).encode()).hexdigest()


def verify_meta(meta: dict[str, Any], path: Path) -> None:
    """ValueError naming ``path`` unless the JSON is what save_checkpoint wrote."""
    if DIGEST_KEY not in meta:
        raise ValueError(f"{path}: no {DIGEST_KEY}, so its labels and config cannot be checked")
    if meta_digest(meta) != meta[DIGEST_KEY]:
        raise ValueError(
            f"{path}: changed or damaged after it was written (its {DIGEST_KEY} does not match "
            "its content: labels, config or feature spec edited?); refused"
        )


def load_checkpoint(
    name_or_path: str | Path, device: str | torch.device = "cpu"
) -> tuple[Ada2I, dict[str, Any]]:
    """(the model in eval mode on ``device``, checkpoint.json) of a checkpoint folder or Hub repo
    id (checkpoint_folder), every file verified; ValueError / FileNotFoundError naming the file
    that is damaged or missing."""
    directory = checkpoint_folder(name_or_path)
    meta = read_checkpoint_meta(directory)
    weights = Path(directory) / WEIGHTS_FILE
    try:
        model = Ada2I(Ada2IConfig.from_dict(meta["model_config"]))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"{Path(directory) / META_FILE}: bad model_config ({exc})") from exc
    state = load_verified(weights, meta.get("weights_sha256"), META_FILE)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(
            f"{weights}: weights do not match the config in {META_FILE} ({exc})"
        ) from exc
    return model.to(device).eval(), meta


def load_verified(path: Path, sha256: str | None, recorded_in: str) -> dict[str, torch.Tensor]:
    """A safetensors file's tensors (CPU), refused with a ValueError naming the file when it does
    not match ``sha256`` (recorded in ``recorded_in``), does not parse, or holds a non-finite
    value, or when no hash was recorded."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint weights missing")
    if sha256 is None:
        raise ValueError(f"{path}: no sha256 recorded in {recorded_in}, so it cannot be verified")
    blob = path.read_bytes()
    if hashlib.sha256(blob).hexdigest() != sha256:
        raise ValueError(
            f"{path}: damaged or replaced: its sha256 does not match the one in {recorded_in} "
            f"({len(blob)} bytes)"
        )
    try:
        state = load_bytes(blob)
    except (SafetensorError, ValueError, OSError) as exc:
        raise ValueError(
            f"{path}: not a valid safetensors file, truncated or damaged ({exc})"
        ) from exc
    for name, t in state.items():
        if t.is_floating_point() and not torch.isfinite(t).all():
            bad = int((~torch.isfinite(t)).sum())
            raise ValueError(f"{path}: tensor {name!r} has {bad} non-finite values; refused")
    return state


def save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> str:
    """Write tensors atomically as safetensors; returns the file's sha256. Written to disk first
    and hashed from there: serialising to bytes in memory for the hash held a second copy of every
    tensor (Adam's moments: ~70 MiB more peak RSS in the training benchmark)."""
    atomic_write(path, lambda p: save_file(tensors, p))
    return sha256_file(path)
