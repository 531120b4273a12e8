"""What produced a prediction: the checkpoint (path, weights hash) and the data it was trained on.

    checkpoint_provenance(checkpoint_dir, meta) -> Provenance

Every prediction output names it: run_info.json beside the predictions, summary.md, index.html,
each report and the Prefect artifact. A checkpoint trained on generated data (the demo's
conversations, synthetic features: pipeline/features/featureset.py `generated_by`) carries a
caveat that every report shows first: its probabilities say how the generator planted its
classes, nothing about emotion in real speech. Checkpoints written before training recorded its
data (checkpoint.json without `training_data`) report "training data unknown".
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.files import sha256_file
from pipeline.training.checkpoint import WEIGHTS_FILE

UNKNOWN = (
    "training data unknown (the checkpoint does not record it: trained before it was recorded)"
)
GENERATORS = {
    "demo": "generated demo data",
    "synthetic": "synthetic features (noise with a planted class signal)",
}


@dataclass(frozen=True)
class Provenance:
    checkpoint: str  # resolved folder
    weights_sha256: str
    epoch: int | None
    modalities: str
    label_names: list[str]
    training_data: dict[str, Any] | None  # run_folder.training_data; None = not recorded

    @property
    def generated(self) -> str:
        return str((self.training_data or {}).get("generated") or "")

    @property
    def caveat(self) -> str:
        """The warning every report shows first; "" for a checkpoint trained on recorded data."""
        if self.generated:
            what = GENERATORS.get(self.generated, f"generated {self.generated} data")
            return f"trained on {what}: its predictions on real speech mean nothing"
        return ""

    def trained_on(self) -> str:
        """One line: what the training data was, its size and where it is."""
        td = self.training_data
        if td is None:
            return UNKNOWN
        return (
            f"{td.get('description') or 'unknown'}; {td.get('n_dialogues', '?')} dialogues, "
            f"{td.get('n_utterances', '?')} utterances ({td.get('n_labelled', '?')} labelled); "
            f"labels {' '.join(td.get('label_names', []))}"
        )

    def _epoch(self) -> str:
        return f"epoch {self.epoch}" if self.epoch is not None else "epoch not recorded"

    def to_dict(self) -> dict[str, Any]:
        return {
            "checkpoint": self.checkpoint,
            "weights_sha256": self.weights_sha256,
            "epoch": self.epoch,
            "modalities": self.modalities,
            "label_names": self.label_names,
            "training_data": self.training_data,
            "trained_on": self.trained_on(),
            "caveat": self.caveat,
        }

    def markdown(self) -> str:
        """The model section of summary.md (and of the Prefect artifact)."""
        td = self.training_data or {}
        lines = ["## Model", ""]
        if self.caveat:
            lines += [f"**Warning: {self.caveat}.**", ""]
        lines += [
            f"- checkpoint: `{self.checkpoint}` ({self._epoch()}, modalities {self.modalities})",
            f"- weights sha256: `{self.weights_sha256}`",
            f"- trained on: {self.trained_on()}",
        ]
        if td.get("featureset") or td.get("featureset_sha256"):
            lines.append(
                f"- feature set: `{td.get('featureset') or '(in memory)'}` "
                f"(content sha256 `{td.get('featureset_sha256', '?')}`)"
            )
        return "\n".join(lines) + "\n"

    def html(self) -> str:
        """The same for the HTML reports: the caveat as a banner above everything else."""
        td = self.training_data or {}
        banner = (
            f"<p class='caveat' id='caveat'><strong>Warning: {html.escape(self.caveat)}.</strong></p>"
            if self.caveat
            else ""
        )
        items = [
            f"checkpoint <code>{html.escape(self.checkpoint)}</code> ({self._epoch()}, "
            f"modalities {html.escape(self.modalities)})",
            f"weights sha256 <code>{self.weights_sha256}</code>",
            f"trained on: {html.escape(self.trained_on())}",
        ]
        if td.get("featureset_sha256"):
            items.append(
                f"feature set <code>{html.escape(td.get('featureset') or '(in memory)')}</code> "
                f"(content sha256 <code>{html.escape(td['featureset_sha256'])}</code>)"
            )
        lis = "".join(f"<li>{i}</li>" for i in items)
        return f"{banner}<div id='provenance'><h3>Model</h3><ul>{lis}</ul></div>"


def checkpoint_provenance(checkpoint_dir: str | Path, meta: dict[str, Any]) -> Provenance:
    """From a loaded checkpoint's folder and checkpoint.json (load_checkpoint verified the weights
    against the recorded hash; an older checkpoint without one gets its file hashed here)."""
    folder = Path(checkpoint_dir).expanduser().resolve()
    sha = meta.get("weights_sha256") or sha256_file(folder / WEIGHTS_FILE)
    td = meta.get("training_data")
    return Provenance(
        checkpoint=str(folder),
        weights_sha256=str(sha),
        epoch=meta.get("epoch"),
        modalities=str(meta.get("model_config", {}).get("modalities", "")),
        label_names=list(meta.get("label_names", [])),
        training_data=td if isinstance(td, dict) else None,
    )
