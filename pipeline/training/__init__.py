"""Stage 3, training: FeatureSet -> run folder with a checkpoint, metrics and diagnostics.

In: a FeatureSet directory (pipeline.features) and model/training settings. Out: a run folder
(config.json, best/ and last/ checkpoints, history, test metrics, plots) and grid summaries.

Contracts owned: the Batch (data.py), the checkpoint format (checkpoint.py), the run folder's
identity, resume check and lock (run_folder.py), the resumable state in last/ (train.py),
TrainConfig and its `--set` overrides (train_config.py), metrics (evaluate.py), imbalance
diagnostics (diagnostics.py) and the subset x seed grid (grid.py).
"""
