"""Demo conversations generated on the fly: the default data of the README's main command.

make_demo_dataset(out_dir) writes, per dialogue, one mp4 (h264 + AAC, 320x240 at 10 fps) and one
SRT, plus manifest.csv over all of them (one row per utterance). Every modality carries a weak,
learnable class signal, so a model trained on it does better than chance but not perfectly:

- video: the real face image shipped with matplotlib (grace_hopper.jpg, public domain) moving and
  scaled per utterance on a speaker-coloured background, tinted slightly by emotion; gaps between
  utterances and about one utterance in eight show no face (the "speaker off screen" case that the
  visual extractor must mask, not crash on).
- audio: a voiced buzz (harmonics of f0, syllable-rate envelope, noise) whose pitch, loudness and
  syllable rate depend on emotion and speaker, jittered per utterance so that classes overlap.
- text: sentences mixing emotion words with shared filler, with some words from another class.

Labels: 4 classes (LABELS), balanced inside each dialogue; speakers A/B; splits train/dev/test by
dialogue. Deterministic in `seed`; a second call with the same arguments reuses the files. The
manifest's extra column has_face says which utterances show the face; `generated` = "demo" marks
every row as generated (pipeline/dataset/manifest.py), so what is trained on it says so.

OpenCV composes the frames (resize, tint); PyAV encodes them together with the audio in one pass
(media_writer.write_video), since OpenCV's VideoWriter cannot write an audio track and a second remux pass
would only add a failure point. The files are probed after writing, and a bad one raises at once.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import matplotlib.cbook
import numpy as np
import pandas as pd

from pipeline.dataset.manifest import GENERATED_COLUMN, normalize, write_manifest
from pipeline.dataset.media import SAMPLE_RATE, probe
from pipeline.dataset.media_writer import write_video
from pipeline.timecode import format_timecode

# Bump when the generated content changes (invalidates reused demo folders). 3: the manifest's
# `generated` column marks the rows as demo data.
DEMO_VERSION = 3
LABELS = ("neu", "hap", "sad", "ang")
# Small frames keep generation to seconds; MTCNN still finds the face at this size.
WIDTH, HEIGHT, FPS = 320, 240, 10
GAP_S = 0.4  # silence + no face between utterances


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


WORDS = {
    "neu": _words("okay meeting schedule tuesday report normal usual fine office paper plan list"),
    "hap": _words(
        "great wonderful love amazing glad fantastic thrilled lovely excited yay perfect fun"
    ),
    "sad": _words("miss lonely sorry lost tears gone empty hurts alone grief down cried"),
    "ang": _words(
        "hate stupid unfair ridiculous furious enough liar shut sick annoying never damn"
    ),
}
FILLER = _words(
    "i you we it the a to and that was is so just really well then there about with this my "
    "your what know think said today again"
)
# Voice per emotion: f0 factor, loudness, syllables per second (directions follow the speech-emotion
# literature: happy/angry higher and louder, sad lower, quieter and slower).
VOICE = {
    "neu": (1.0, 0.35, 4.0),
    "hap": (1.3, 0.5, 5.0),
    "sad": (0.82, 0.22, 3.0),
    "ang": (1.15, 0.65, 5.5),
}
SPEAKER_F0 = {"A": 125.0, "B": 205.0}
SPEAKER_BG = {"A": (60, 90, 140), "B": (70, 130, 80)}  # RGB backgrounds
TINT = {
    "neu": (1.0, 1.0, 1.0),
    "hap": (1.08, 1.04, 0.92),
    "sad": (0.9, 0.95, 1.1),
    "ang": (1.12, 0.92, 0.92),
}


def _face_image() -> np.ndarray:
    """grace_hopper.jpg as RGB uint8 [600, 512, 3]."""
    path = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    bgr = cv2.imread(str(path))
    if bgr is None:
        raise RuntimeError(f"{path}: cannot read matplotlib's sample face image")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _sentence(label: str, rng: np.random.Generator) -> str:
    n_class, n_fill = int(rng.integers(2, 4)), int(rng.integers(3, 7))
    words = list(rng.choice(WORDS[label], n_class)) + list(rng.choice(FILLER, n_fill))
    if rng.random() < 0.3:  # a word from another class: text is a strong cue, not a perfect one
        other = LABELS[int(rng.integers(len(LABELS)))]
        words[0] = str(rng.choice(WORDS[other]))
    rng.shuffle(words)
    return " ".join(words).capitalize() + "."


def _voice(label: str, speaker: str, dur: float, rng: np.random.Generator) -> np.ndarray:
    """float32 [round(dur * 16k)] voiced signal for one utterance."""
    factor, loud, rate = VOICE[label]
    n = int(round(dur * SAMPLE_RATE))
    t = np.arange(n) / SAMPLE_RATE
    f0 = SPEAKER_F0[speaker] * factor * float(np.exp(rng.normal(0, 0.1)))  # jitter: classes overlap
    contour = f0 * (1 + 0.06 * np.sin(2 * np.pi * 0.7 * t + rng.uniform(0, 6)) - 0.05 * t / dur)
    phase = 2 * np.pi * np.cumsum(contour) / SAMPLE_RATE
    voiced = sum(np.sin(k * phase) / k for k in range(1, 7))
    # Syllable-rate loudness modulation; never fully off, so only the gaps between turns are silent.
    syllables = 0.2 + 0.8 * np.clip(np.sin(np.pi * rate * t + rng.uniform(0, 3)), 0, None) ** 0.5
    fade = np.minimum(1, np.minimum(t, dur - t) / 0.05)
    sig = loud * float(np.exp(rng.normal(0, 0.15))) * voiced * syllables * fade / 2.5
    return sig.astype(np.float32)


def _frames(face, plan, total_s, rng):
    """Yield RGB uint8 [HEIGHT, WIDTH, 3] frames for one dialogue (plan: utterance dicts)."""
    # Per utterance: face scale, path across the frame, and whether the face is on screen.
    looks = []
    for u in plan:
        h = int(rng.integers(150, 225))
        w = int(round(face.shape[1] * h / face.shape[0]))
        img = np.clip(
            cv2.resize(face, (w, h)).astype(np.float32) * TINT[u["label"]], 0, 255
        ).astype(np.uint8)
        x0, x1 = rng.integers(0, WIDTH - w, 2)  # drifts left or right across the utterance
        looks.append((img, int(x0), int(x1), int(rng.integers(0, HEIGHT - h + 1))))
    for n in range(int(round(total_s * FPS))):
        t = (n + 0.5) / FPS
        frame = np.empty((HEIGHT, WIDTH, 3), np.uint8)
        frame[:] = (40, 40, 40)
        for u, (img, x0, x1, y) in zip(plan, looks, strict=True):
            if u["start_s"] <= t < u["end_s"]:
                frame[:] = SPEAKER_BG[u["speaker"]]
                if u["face"]:
                    a = (t - u["start_s"]) / (u["end_s"] - u["start_s"])
                    x = int(round(x0 + a * (x1 - x0)))
                    frame[y : y + img.shape[0], x : x + img.shape[1]] = img
                break
        yield frame


def _splits(n: int, rng: np.random.Generator) -> list[str]:
    n_test = max(1, round(n / 6)) if n >= 2 else 0
    n_dev = max(1, round(n / 6)) if n >= 3 else 0
    splits = ["test"] * n_test + ["dev"] * n_dev + ["train"] * (n - n_test - n_dev)
    return [str(s) for s in rng.permutation(splits)]


def make_demo_dataset(
    out_dir: str | Path, n_dialogues: int = 6, utterances_per_dialogue: int = 8, seed: int = 0
) -> Path:
    """Generate (or reuse) the demo set in out_dir -> path of manifest.csv."""
    if n_dialogues < 1 or utterances_per_dialogue < 1:
        raise ValueError("n_dialogues and utterances_per_dialogue must be >= 1")
    out_dir = Path(out_dir)
    params = {
        "version": DEMO_VERSION,
        "n_dialogues": n_dialogues,
        "utterances_per_dialogue": utterances_per_dialogue,
        "seed": seed,
    }
    manifest_path, params_path = out_dir / "manifest.csv", out_dir / "demo.json"
    if _reusable(out_dir, params):
        return manifest_path
    out_dir.mkdir(parents=True, exist_ok=True)
    params_path.unlink(missing_ok=True)  # a half-regenerated folder must not look reusable
    rng = np.random.default_rng(seed)
    face = _face_image()
    splits = _splits(n_dialogues, rng)
    rows = []
    for d in range(n_dialogues):
        did = f"demo_d{d:02d}"
        labels = [LABELS[k % len(LABELS)] for k in range(utterances_per_dialogue)]
        rng.shuffle(labels)
        no_face = set(
            rng.choice(
                utterances_per_dialogue, max(0, utterances_per_dialogue // 8), replace=False
            ).tolist()
        )
        plan, t = [], GAP_S
        for k, label in enumerate(labels):
            dur = float(np.round(rng.uniform(1.6, 3.2), 2))
            speaker = "AB"[k % 2] if rng.random() < 0.85 else "AB"[(k + 1) % 2]
            plan.append(
                {
                    "dialogue_id": did,
                    "utterance_id": f"{did}_u{k:02d}",
                    "speaker": speaker,
                    "start_s": round(t, 3),
                    "end_s": round(t + dur, 3),
                    "text": _sentence(label, rng),
                    "label": label,
                    "split": splits[d],
                    "face": k not in no_face,
                }
            )
            t += dur + GAP_S
        total = t
        # Room noise at about -54 dBFS, the noise floor measured on the real IEMOCAP clips.
        audio = rng.normal(0, 0.002, int(round(total * SAMPLE_RATE))).astype(np.float32)
        for u in plan:
            a0 = int(round(u["start_s"] * SAMPLE_RATE))
            voice = _voice(u["label"], u["speaker"], u["end_s"] - u["start_s"], rng)
            audio[a0 : a0 + len(voice)] += voice
        video = out_dir / f"{did}.mp4"
        write_video(video, _frames(face, plan, total, rng), FPS, np.clip(audio, -1, 1))
        _check_written(video, total)
        _write_srt(out_dir / f"{did}.srt", plan)
        for u in plan:
            rows.append(
                {
                    **{k: v for k, v in u.items() if k != "face"},
                    "video_path": str(video),
                    "audio_path": "",
                    "has_face": u["face"],
                    # a model trained on these rows learns the generator's cues, not emotion
                    GENERATED_COLUMN: "demo",
                }
            )
    write_manifest(normalize(pd.DataFrame(rows)), manifest_path)
    params_path.write_text(json.dumps(params, indent=1))
    return manifest_path


def _reusable(out_dir: Path, params: dict) -> bool:
    try:
        if json.loads((out_dir / "demo.json").read_text()) != params:
            return False
        df = pd.read_csv(out_dir / "manifest.csv", dtype=str, keep_default_na=False)
    except (OSError, ValueError):
        return False
    return all((out_dir / p).is_file() for p in set(df["video_path"]))


def _check_written(path: Path, total_s: float) -> None:
    info = probe(path)
    if not (info.has_audio and info.has_video) or abs((info.duration_s or 0) - total_s) > 0.5:
        raise RuntimeError(f"{path}: demo video written incorrectly ({info})")


def _write_srt(path: Path, plan: list[dict]) -> None:
    """Subtitles with "speaker: text" cues (the SRT route of the segmentation step)."""
    cues = [
        f"{i}\n{format_timecode(u['start_s'])} --> {format_timecode(u['end_s'])}\n{u['speaker']}: {u['text']}\n"
        for i, u in enumerate(plan, 1)
    ]
    path.write_text("\n".join(cues), encoding="utf-8")
