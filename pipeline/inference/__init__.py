"""Stage 4, inference: new videos + a checkpoint -> per-utterance emotions and reports.

In: video/audio files, optionally a manifest or subtitles, and a checkpoint (pipeline.training).
Out: utterance segments (from manifest rows, SRT/WebVTT cues, or VAD + ASR), then per-video
predictions (CSV/JSONL/HTML report), a failures list and a summary across videos.

Contracts owned: segmentation and its per-cue problems (segment.py: manifest rows, subtitles,
voice-activity detection; asr.py: speech recognition), the prediction run (predict.py: a PredictJob
and its steps) and its outputs (predict_outputs.py, with the model's provenance, a labelled
run's scores and the HTML pages).
"""
