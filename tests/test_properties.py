"""Property tests: arbitrary bytes and strings never raise anything but the documented errors.

    read_manifest      ManifestError (a ValueError)        pipeline/dataset/manifest.py
    parse_srt/_vtt     SubtitleError (a ValueError)        pipeline/inference/segment.py
    FeatureSet.load    FeatureSetError (a ValueError)      pipeline/features/featureset.py
    load_checkpoint    ValueError (FileNotFoundError for a missing file)   pipeline/training/checkpoint.py

Budget: a few seconds each (max_examples, no deadline: the shared CI cores are noisy).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from pipeline.dataset.manifest import ManifestError, read_manifest
from pipeline.features.featureset import FeatureSet, FeatureSetError
from pipeline.inference.segment import SubtitleError, parse_srt, parse_subtitles, parse_vtt

FAST = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

# Text that looks like the formats, so the parsers get past their first check.
CSV_LINES = st.lists(
    st.one_of(
        st.just("dialogue_id,utterance_id,speaker,start_s,end_s,text,label,label_set"),
        st.from_regex(
            r"[a-z]{0,3},[a-z0-9]{0,3},[A-Z]?,[-0-9.naif]{0,5},[-0-9.naif]{0,5},.{0,6}",
            fullmatch=True,
        ),  # fmt: skip
        st.text(max_size=30),
    ),
    max_size=6,
).map("\n".join)
SUB_TEXT = st.lists(
    st.one_of(
        st.just("WEBVTT"),
        st.just(""),
        st.from_regex(r"\d{1,2}", fullmatch=True),
        st.from_regex(
            r"(\d{1,3}:)?\d{1,2}:\d{1,2}[,.]\d{1,4} ?--> ?(\d{1,3}:)?\d{1,2}:\d{1,2}[,.]\d{0,4}.{0,5}",
            fullmatch=True,
        ),
        st.from_regex(
            r"(<v [A-Za-z]{1,5}>|\[[A-Za-z]{0,5}\]|[A-Za-z]{1,5}: )?.{0,10}", fullmatch=True
        ),
        st.text(max_size=20),
    ),
    max_size=12,
).map("\n".join)


@pytest.fixture(scope="module")
def scratch():
    d = Path(tempfile.mkdtemp(prefix="props-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@FAST
@given(data=st.one_of(st.binary(max_size=300), CSV_LINES.map(str.encode)),
       suffix=st.sampled_from([".csv", ".jsonl", ".parquet"]))  # fmt: skip
def test_read_manifest_raises_only_manifest_error(data, suffix, scratch):
    path = scratch / f"m{suffix}"
    path.write_bytes(data)
    try:
        df = read_manifest(path)
    except ManifestError as exc:
        assert str(path) in str(exc)
        return
    assert len(df) > 0 and df["utterance_id"].is_unique  # what it reads is a usable manifest


@FAST
@given(text=st.one_of(SUB_TEXT, st.text(max_size=200)))
def test_subtitle_parsers_raise_only_subtitle_error(text):
    for parse in (parse_srt, parse_vtt):
        try:
            cues = parse(text, "x")
        except SubtitleError as exc:
            assert str(exc).startswith("x")
            continue
        assert cues and all(c.end_s > c.start_s or c.problem for c in cues)
        assert [c.start_s for c in cues] == sorted(c.start_s for c in cues)


@FAST
@given(data=st.binary(max_size=200), suffix=st.sampled_from([".srt", ".vtt", ".SRT"]))
def test_parse_subtitles_file_raises_only_subtitle_error(data, suffix, scratch):
    path = scratch / f"s{suffix}"
    path.write_bytes(data)
    try:
        parse_subtitles(path)
    except SubtitleError as exc:
        assert str(path) in str(exc)


def _featureset_dir(root: Path, tensors: dict, meta: object) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(root / "features.safetensors"))
    (root / "meta.json").write_text(json.dumps(meta))
    return root


TENSOR = st.builds(
    lambda shape, dtype: torch.zeros(shape, dtype=dtype),
    st.lists(st.integers(0, 4), min_size=0, max_size=2).map(tuple),
    st.sampled_from([torch.float32, torch.int64, torch.uint8, torch.bool, torch.float16]),
)
JSONISH = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-3, 10), st.floats(allow_nan=False),
              st.text(max_size=4)),
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.text(max_size=6), inner, max_size=4)),
    max_leaves=12,
)  # fmt: skip
META = st.one_of(
    JSONISH,
    st.fixed_dictionaries(
        {"label_names": st.lists(st.text(max_size=3), max_size=3),
         "dialogues": st.lists(st.fixed_dictionaries(
             {"id": JSONISH, "start": st.integers(-1, 4), "length": st.integers(-1, 4),
              "utterance_ids": st.lists(st.text(max_size=2), max_size=4),
              "speakers": st.lists(st.text(max_size=2), max_size=4)}), max_size=2),
         "feature_spec": st.one_of(st.just({}), JSONISH)}
    ),
)  # fmt: skip


@FAST
@given(
    tensors=st.dictionaries(
        st.sampled_from(["labels", "feat.t", "present.t", "feat.a", "present.a", "feat.x"]),
        TENSOR, max_size=5,
    ),
    meta=META,
)  # fmt: skip
def test_featureset_load_raises_only_featureset_error(tensors, meta, scratch):
    root = _featureset_dir(scratch / "fs", tensors, meta)
    try:
        fs = FeatureSet.load(root)
    except FeatureSetError as exc:
        assert str(root) in str(exc)
        return
    assert len(fs) == sum(d.length for d in fs.dialogues)


@FAST
@given(features=st.binary(max_size=200), meta=st.binary(max_size=60))
def test_featureset_load_of_random_bytes(features, meta, scratch):
    root = scratch / "fsb"
    root.mkdir(exist_ok=True)
    (root / "features.safetensors").write_bytes(features)
    (root / "meta.json").write_bytes(meta)
    with pytest.raises(FeatureSetError, match=str(root)):
        FeatureSet.load(root)


# Found by this test: checkpoint.json holding JSON that is not an object (e.g. `null`) raised
# AttributeError; pipeline/training/checkpoint.py now refuses it with ValueError.
@FAST
@given(weights=st.binary(max_size=200), meta=st.one_of(st.binary(max_size=60), JSONISH.map(
    lambda m: json.dumps(m).encode())))  # fmt: skip
def test_load_checkpoint_raises_only_value_error(weights, meta, scratch):
    """pipeline.training.checkpoint.load_checkpoint (read-only here): bytes in, ValueError out."""
    from pipeline.training.checkpoint import load_checkpoint

    root = scratch / "ck"
    root.mkdir(exist_ok=True)
    (root / "model.safetensors").write_bytes(weights)
    (root / "checkpoint.json").write_bytes(meta)
    with pytest.raises(ValueError):
        load_checkpoint(root)
