"""Parquet shards of one config, written as the rows stream in, capped by size.

`data/<config>/<split>-NNNNN-of-NNNNN.parquet`, the layout `datasets.push_to_hub` writes and
the Hub's viewer reads. The total is known only at the end, so shards are written under
temporary names and renamed when the config is done. Memory stays bounded: one record batch
(the caller's) and one row group at a time.

Writer settings are fixed, so the same rows give the same bytes: a shard whose rows did not
change since the last release keeps its sha256 and is not uploaded again. Content-defined
chunking (the Hub's Xet storage deduplicates its pages) also lets a shard whose rows moved
share most of its bytes with the old one.
"""

from __future__ import annotations

import hashlib
import queue
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

DEFAULT_SPLIT = "train"
# datasets.push_to_hub's default cap (config.MAX_SHARD_SIZE).
DEFAULT_MAX_SHARD_BYTES = 500 * 1024 * 1024

WRITER_OPTIONS = {
    "compression": "zstd",
    "compression_level": 1,
    "use_content_defined_chunking": True,
    "write_page_index": True,
}
# Statistics (min/max per page and row group) only for columns they help to filter on: on a
# text column they are copies of its longest values, kept for every row group until the file
# is closed, and they grow the footer with the row count.
STATISTICS_TYPES = (pa.types.is_integer, pa.types.is_floating, pa.types.is_boolean)
# Rows are gathered into row groups of about this much data (uncompressed), as the Hub's
# viewer and datasets read them best; a shard near its cap takes a smaller last one.
ROW_GROUP_BYTES = 32 * 1024 * 1024


@dataclass(frozen=True)
class ShardFile:
    path: str  # in the repository, e.g. data/sft/train-00000-of-00002.parquet
    local: Path
    rows: int
    size: int
    sha256: str
    git_oid: str  # the git blob id: what the Hub's tree lists for a file not in LFS


def file_digests(path: Path) -> tuple[str, str, int]:
    """(sha256, git blob sha1, size) of a file, read once."""
    size = path.stat().st_size
    sha256 = hashlib.sha256()
    blob = hashlib.sha1(f"blob {size}\0".encode(), usedforsecurity=False)
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            sha256.update(chunk)
            blob.update(chunk)
    return sha256.hexdigest(), blob.hexdigest(), size


class ShardWriter:
    """Writes the batches of one config into size-capped shards under `root/data/<config>/`."""

    def __init__(
        self,
        root: Path,
        config: str,
        schema: pa.Schema,
        *,
        max_bytes: int = DEFAULT_MAX_SHARD_BYTES,
        split: str = DEFAULT_SPLIT,
    ) -> None:
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        self.config = config
        self.schema = schema
        self.max_bytes = max_bytes
        self.split = split
        self.directory = root / "data" / config
        self.directory.mkdir(parents=True, exist_ok=True)
        self._parts: list[tuple[Path, int]] = []
        self._sink: pa.NativeFile | None = None
        self._writer: pq.ParquetWriter | None = None
        self._rows = 0
        self.rows = 0
        self._pending: list[pa.RecordBatch] = []
        self._pending_bytes = 0

    def write(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows == 0:
            return
        if self._writer is None:
            self._open()
        assert self._sink is not None
        self._pending.append(batch)
        self._pending_bytes += batch.nbytes
        self.rows += batch.num_rows
        if (
            self._pending_bytes >= ROW_GROUP_BYTES
            or self._sink.tell() + self._pending_bytes >= self.max_bytes
        ):
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        assert self._writer is not None and self._sink is not None
        table = pa.Table.from_batches(self._pending, schema=self.schema)
        self._writer.write_table(table, row_group_size=table.num_rows)
        self._rows += table.num_rows
        self._pending = []
        self._pending_bytes = 0
        # A shard is cut once it reaches the cap: whole row groups, as datasets does.
        if self._sink.tell() >= self.max_bytes:
            self._close_part()

    def close(self) -> list[ShardFile]:
        """Finishes the config. A config with no rows has no shard (and the card does not list
        it: `datasets` cannot load a split without data)."""
        self._flush()
        if self._writer is not None:
            self._close_part()
        total = len(self._parts)
        shards = []
        for i, (tmp, rows) in enumerate(self._parts):
            name = f"{self.split}-{i:05d}-of-{total:05d}.parquet"
            final = self.directory / name
            tmp.replace(final)
            sha256, oid, size = file_digests(final)
            shards.append(ShardFile(f"data/{self.config}/{name}", final, rows, size, sha256, oid))
        return shards

    def _open(self) -> None:
        tmp = self.directory / f".part-{len(self._parts):05d}.parquet"
        self._sink = pa.OSFile(str(tmp), "wb")
        statistics = [
            f.name for f in self.schema if any(check(f.type) for check in STATISTICS_TYPES)
        ]
        self._writer = pq.ParquetWriter(
            self._sink, self.schema, write_statistics=statistics, **WRITER_OPTIONS
        )
        self._parts.append((tmp, 0))
        self._rows = 0

    def _close_part(self) -> None:
        assert self._writer is not None and self._sink is not None
        self._writer.close()
        self._sink.close()
        path, _ = self._parts[-1]
        self._parts[-1] = (path, self._rows)
        self._writer = None
        self._sink = None


@contextmanager
def background(
    writers: dict[str, ShardWriter], *, depth: int = 4
) -> Iterator[Callable[[str, pa.RecordBatch], None]]:
    """A thread that writes the batches it is handed, in order, while the caller reads the
    next ones. At most `depth` batches wait. An error in the thread is raised in the caller
    (at its next hand-over, or on leaving the block)."""
    work: queue.Queue[tuple[str, pa.RecordBatch] | None] = queue.Queue(maxsize=depth)
    failure: list[BaseException] = []

    def run() -> None:
        while (item := work.get()) is not None:
            if failure:
                continue  # drain, so the caller never blocks on a full queue
            try:
                writers[item[0]].write(item[1])
            except BaseException as exc:
                failure.append(exc)

    thread = threading.Thread(target=run, name="release-writer", daemon=True)
    thread.start()

    def submit(config: str, batch: pa.RecordBatch) -> None:
        if failure:
            raise failure[0]
        work.put((config, batch))

    try:
        yield submit
    finally:
        work.put(None)
        thread.join()
    if failure:
        raise failure[0]
