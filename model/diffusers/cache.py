"""A local, checked copy of a diffusers folder that lives on fsspec storage (s3://, memory://).

diffusers and transformers load from local files only, so a checkpoint on remote storage
is copied once into a cache directory and loaded from there. Invariants:

1. An entry appears whole or not at all: files are copied into a temporary folder, each
   checked against the source's size and hashed on the way, and the folder is renamed
   into place only after its manifest (`MANIFEST`) is written.
2. An entry is reused only while the source lists the same files with the same sizes;
   otherwise it is copied again.
3. The checkpoint digest (provenance) is the sha256 of the sorted ``path sha256`` lines of
   its files, the same for a local folder and for its cached copy.

The cache directory is an argument, else `$FARM_MODEL_CACHE` (`CACHE_ENV`), else
``~/.cache/farm/models``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path

from model.diffusers.configs import DiffusersCheckpointError, pipeline_family, read_json

CACHE_ENV = "FARM_MODEL_CACHE"
MANIFEST = ".farm-manifest.json"
_CHUNK = 8 << 20


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """The cache directory: the argument, else $FARM_MODEL_CACHE, else ~/.cache/farm/models."""
    root = cache_dir or os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "farm" / "models"
    return Path(root).expanduser()


def is_local(url: str) -> bool:
    """Whether `url` is a plain local path (or file://), which is loaded in place."""
    return "://" not in url or url.startswith("file://")


def local_path(url: str) -> Path:
    """The local directory of a plain path or file:// URL."""
    return Path(url[len("file://") :] if url.startswith("file://") else url)


def digest_of(hashes: dict[str, str]) -> str:
    """Checkpoint digest from {relative path: file sha256} (invariant 3)."""
    lines = "".join(f"{path} {hashes[path]}\n" for path in sorted(hashes))
    return hashlib.sha256(lines.encode()).hexdigest()


def hash_file(path: Path) -> str:
    """sha256 of one file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def folder_digest(root: Path) -> str:
    """Digest of a local checkpoint folder: from its manifest when cached, else by hashing."""
    manifest = root / MANIFEST
    if manifest.exists():
        return json.loads(manifest.read_text())["digest"]
    hashes = {
        p.relative_to(root).as_posix(): hash_file(p)
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }
    return digest_of(hashes)


def _listing(fs, root: str) -> dict[str, int]:
    """{relative path: size} of every file under `root` on `fs`."""
    files = fs.find(root, detail=True)
    base = root.rstrip("/") + "/"
    return {
        path[len(base) :] if path.startswith(base) else path: int(info.get("size") or 0)
        for path, info in files.items()
        if info.get("type", "file") == "file"
    }


def _entry_matches(entry: Path, listing: dict[str, int]) -> bool:
    """Invariant 2: the entry's manifest lists these files with these sizes, and they are there."""
    try:
        manifest = json.loads((entry / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    files = manifest.get("files", {})
    if {k: v["size"] for k, v in files.items()} != listing:
        return False
    return all(
        (entry / k).is_file() and (entry / k).stat().st_size == n for k, n in listing.items()
    )


def fetch(url: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """A local folder holding the diffusers checkpoint at fsspec `url` (copied once, checked).

    The pipeline class is checked before anything is copied, so an unsupported or missing
    checkpoint leaves nothing in the cache.
    """
    import fsspec

    pipeline_family(read_json(url, "model_index.json"), url)
    fs, root = fsspec.core.url_to_fs(url)
    listing = _listing(fs, root)
    root_dir = cache_root(cache_dir)
    entry = root_dir / hashlib.sha256(url.encode()).hexdigest()[:32]
    if _entry_matches(entry, listing):
        return entry
    root_dir.mkdir(parents=True, exist_ok=True)
    tmp = root_dir / f"{entry.name}.tmp-{uuid.uuid4().hex}"
    try:
        hashes = {}
        for rel, size in sorted(listing.items()):
            dest = tmp / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            h, copied = hashlib.sha256(), 0
            with fs.open(root.rstrip("/") + "/" + rel, "rb") as src, open(dest, "wb") as out:
                while chunk := src.read(_CHUNK):
                    h.update(chunk)
                    out.write(chunk)
                    copied += len(chunk)
            if copied != size:
                raise DiffusersCheckpointError(
                    f"{url!r}: {rel} is {size} bytes at the source but {copied} were read"
                )
            hashes[rel] = h.hexdigest()
        manifest = {
            "url": url,
            "files": {rel: {"size": listing[rel], "sha256": hashes[rel]} for rel in hashes},
            "digest": digest_of(hashes),
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
        if entry.exists():
            shutil.rmtree(entry)
        os.replace(tmp, entry)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return entry


def forget(entry: Path, cache_dir: str | os.PathLike | None = None) -> None:
    """Remove a cache entry (after its checkpoint failed to load), never anything outside it."""
    root = cache_root(cache_dir).resolve()
    if entry.resolve().parent == root and entry.exists():
        shutil.rmtree(entry, ignore_errors=True)
