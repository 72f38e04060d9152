"""The local weight cache: a sparse copy of the model file plus a journal of chunks.

`DIR/<model digest>/model.gguf` has the original file's size and layout, but only the
regions this node fetched are written: the rest are holes, which take no disk, so the
GGUF reader and the loaders read it as the original file. `chunks.log` lists, one line
each, the chunks written and verified against the manifest (`manifest.pb`). A chunk is
logged only after its bytes are written, so a process killed at any moment (SIGKILL
included) resumes where it was: a chunk on disk and in the journal is never fetched
again, and one written but not logged is fetched again. A re-join or a re-assignment
to overlapping layers reuses the chunks it has.
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

from parallax.errors import ConfigError
from parallax.weights.manifest import Manifest

MODEL_FILE = "model.gguf"
JOURNAL = "chunks.log"
MANIFEST_FILE = "manifest.pb"


def default_cache_dir() -> Path:
    """$XDG_CACHE_HOME/parallax, or ~/.cache/parallax."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "parallax"


class WeightCache:
    """One model's cached chunks. Thread-safe: a fetch writes while peers read."""

    def __init__(self, root: Path, manifest: Manifest) -> None:
        self.manifest = manifest
        self.dir = root / manifest.model_digest[:32]
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            (self.dir / MANIFEST_FILE).write_bytes(manifest.to_pb().SerializeToString())
            self.path = self.dir / MODEL_FILE
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            if os.fstat(self._fd).st_size != manifest.file_bytes:
                os.ftruncate(self._fd, manifest.file_bytes)  # holes: no disk used
        except OSError as e:
            raise ConfigError(
                f"--cache-dir={root}: cannot write the weight cache there ({e}); give a "
                "writable folder"
            ) from e
        self._lock = threading.Lock()
        self._have = self._read_journal()
        self._drop_torn_tail()
        self._journal = open(self.dir / JOURNAL, "a", encoding="utf-8")  # noqa: SIM115

    def _read_journal(self) -> set[tuple[str, int]]:
        have: set[tuple[str, int]] = set()
        try:
            text = (self.dir / JOURNAL).read_text(encoding="utf-8")
        except FileNotFoundError:
            return have
        lines = text.split("\n")
        for line in lines[:-1]:  # the last is "" or torn (no newline): never trusted
            name, sep, index = line.rpartition("\t")
            region = self.manifest.regions.get(name)
            # A torn last line (killed while appending) or a stale entry is skipped.
            if sep and index.isdigit() and region and int(index) < len(region.chunk_sha256):
                have.add((name, int(index)))
        return have

    def _drop_torn_tail(self) -> None:
        """Cut a torn last line (no newline), so what is appended next is not glued to it."""
        try:
            with (self.dir / JOURNAL).open("rb+") as f:
                data = f.read()
                f.truncate(data.rfind(b"\n") + 1)
        except FileNotFoundError:
            pass

    def has(self, region: str, index: int) -> bool:
        with self._lock:
            return (region, index) in self._have

    def chunk_bytes(self, region: str, index: int) -> int:
        return self.manifest.regions[region].chunk_span(index, self.manifest.chunk_bytes)[1]

    def verify(self, region: str, index: int, data: bytes) -> bool:
        """Whether `data` is chunk `index` of `region` as the manifest says."""
        r = self.manifest.regions[region]
        return (
            len(data) == self.chunk_bytes(region, index)
            and hashlib.sha256(data).digest() == r.chunk_sha256[index]
        )

    def put(self, region: str, index: int, data: bytes) -> None:
        """Write a verified chunk, then log it."""
        offset, _ = self.manifest.regions[region].chunk_span(index, self.manifest.chunk_bytes)
        os.pwrite(self._fd, data, offset)
        with self._lock:
            self._journal.write(f"{region}\t{index}\n")
            self._journal.flush()
            self._have.add((region, index))

    def read(self, region: str, index: int) -> bytes | None:
        """A logged chunk's bytes, or None when this cache does not hold it."""
        if not self.has(region, index):
            return None
        offset, length = self.manifest.regions[region].chunk_span(index, self.manifest.chunk_bytes)
        return os.pread(self._fd, length, offset)

    def chunks(self) -> set[tuple[str, int]]:
        with self._lock:
            return set(self._have)

    def close(self) -> None:
        self._journal.close()
        os.close(self._fd)
