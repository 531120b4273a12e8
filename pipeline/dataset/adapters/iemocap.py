"""IEMOCAP raw release -> manifest.

Layout (the USC SAIL release):

    Session{1..5}/dialog/transcriptions/{dialog}.txt   Ses01F_impro01_F000 [006.2901-008.2357]: Excuse me.
    Session{1..5}/dialog/EmoEvaluation/{dialog}.txt    [6.2901 - 8.2357]<TAB>Ses01F_impro01_F000<TAB>neu<TAB>[2.5, ...]
    Session{1..5}/dialog/avi/DivX/{dialog}.avi         the dialogue video (both actors)
    Session{1..5}/dialog/wav/{dialog}.wav              the dialogue audio

Utterance times come from the transcripts (the EmoEvaluation times are the same segments, rounded).
Rows are the transcript's utterances with a proper id (lines such as `M: [LAUGHTER]` or ids with XX
are not utterances), sorted by start time within a dialogue. Labels: the standard 6-class ERC set,
hap and exc kept separate (the common IEMOCAP-6 protocol); other codes (xxx, oth, fea, sur, dis) and
unevaluated utterances are dropped unless include_all=True, where they keep their raw code ("" when
unevaluated); the manifest declares label_set "iemocap" unless include_all. Split: Session 5 is the test set by default (speaker-independent); dev is an optional
random fraction of the other dialogues, or an explicit list.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from pipeline.dataset.manifest import IEMOCAP, LABEL_SET_COLUMN, normalize

ERC_LABELS = IEMOCAP  # hap sad neu ang exc fru: the canonical order (pipeline/dataset/manifest.py)
_TRANSCRIPT = re.compile(
    r"^(?P<uid>Ses\d\d[FM]_\S+_(?P<spk>[FM])\d{3})\s*\[(?P<start>[\d.]+)\s*-\s*(?P<end>[\d.]+)\]:\s?(?P<text>.*)$"
)
_EMOTION = re.compile(r"^\[[\d.]+\s*-\s*[\d.]+\]\s+(?P<uid>\S+)\s+(?P<emo>\w+)\s+\[")


def parse_transcript(path: Path) -> list[dict]:
    """Transcript file -> [{utterance_id, speaker, start_s, end_s, text}] in file order."""
    rows = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        m = _TRANSCRIPT.match(line.strip())
        if m:
            rows.append(
                {
                    "utterance_id": m["uid"],
                    "speaker": m["spk"],
                    "start_s": float(m["start"]),
                    "end_s": float(m["end"]),
                    "text": m["text"].strip(),
                }
            )
    return rows


def parse_emo_evaluation(path: Path) -> dict[str, str]:
    """EmoEvaluation file -> {utterance_id: consensus emotion code}."""
    labels = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        m = _EMOTION.match(line.strip())
        if m:
            labels[m["uid"]] = m["emo"]
    return labels


def _split_of(dialogue: str, session: int, test_sessions, dev: set[str]) -> str:
    if session in test_sessions:
        return "test"
    return "dev" if dialogue in dev else "train"


def load_iemocap(
    root: str | Path,
    sessions: Iterable[int] = (1, 2, 3, 4, 5),
    include_all: bool = False,
    test_sessions: Iterable[int] = (5,),
    dev_dialogues: Iterable[str] | None = None,
    dev_fraction: float = 0.0,
    seed: int = 0,
) -> pd.DataFrame:
    """Raw IEMOCAP folder -> manifest (one row per utterance, times in the dialogue recording).

    dev_dialogues names the dev dialogues explicitly; otherwise dev_fraction of the non-test
    dialogues (chosen with `seed`) become dev.
    """
    root = Path(root)
    test_sessions = set(test_sessions)
    records: list[dict] = []
    per_dialogue: dict[str, tuple[int, list[dict]]] = {}
    for session in sessions:
        dialog_dir = root / f"Session{session}" / "dialog"
        for tpath in sorted((dialog_dir / "transcriptions").glob("*.txt")):
            dialogue = tpath.stem
            emo_path = dialog_dir / "EmoEvaluation" / f"{dialogue}.txt"
            labels = parse_emo_evaluation(emo_path) if emo_path.is_file() else {}
            video = dialog_dir / "avi" / "DivX" / f"{dialogue}.avi"
            audio = dialog_dir / "wav" / f"{dialogue}.wav"
            rows = []
            for utt in parse_transcript(tpath):
                label = labels.get(utt["utterance_id"], "")
                if not include_all and label not in ERC_LABELS:
                    continue
                utt.update(
                    dialogue_id=dialogue,
                    label=label,
                    video_path=str(video) if video.is_file() else "",
                    audio_path=str(audio) if audio.is_file() else "",
                )
                rows.append(utt)
            rows.sort(key=lambda r: r["start_s"])  # stable: transcript order on ties
            if rows:
                per_dialogue[dialogue] = (session, rows)
    if not per_dialogue:
        raise ValueError(f"{root}: no IEMOCAP transcriptions under Session*/dialog/transcriptions")
    candidates = sorted(d for d, (s, _) in per_dialogue.items() if s not in test_sessions)
    if dev_dialogues is not None:
        dev = set(dev_dialogues)
    else:
        dev = set(random.Random(seed).sample(candidates, round(dev_fraction * len(candidates))))
    for dialogue, (session, rows) in per_dialogue.items():
        split = _split_of(dialogue, session, test_sessions, dev)
        records.extend({**r, "split": split} for r in rows)
    df = pd.DataFrame.from_records(records)
    if not include_all:  # raw codes (xxx, oth, ...) are outside the IEMOCAP-6 set
        df[LABEL_SET_COLUMN] = "iemocap"
    return normalize(df, source=str(root))
