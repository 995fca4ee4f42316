"""scoring.publishing.shards: size-capped parquet shards named as `datasets.push_to_hub` names
them, the same bytes for the same rows, and the digests the targets compare."""

import hashlib
import random
import subprocess

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from scoring.publishing.shards import DEFAULT_MAX_SHARD_BYTES, ShardWriter, file_digests

MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string())])
SCHEMA = pa.schema(
    [
        ("id", pa.int64()),
        ("text", pa.string()),
        ("messages", pa.list_(MESSAGE)),
        ("reward", pa.float64()),
    ]
)


def batches(count: int, rows: int, *, seed: int = 7) -> list[pa.RecordBatch]:
    """`count` batches of `rows` rows; random hex text so zstd cannot shrink it to nothing."""
    rng = random.Random(seed)
    out = []
    for b in range(count):
        ids = list(range(b * rows, (b + 1) * rows))
        texts = [rng.randbytes(100).hex() for _ in ids]
        out.append(
            pa.RecordBatch.from_pydict(
                {
                    "id": ids,
                    "text": texts,
                    "messages": [
                        [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": t}]
                        for i, t in zip(ids, texts, strict=True)
                    ],
                    "reward": [None if i % 3 == 0 else i / 10 for i in ids],
                },
                schema=SCHEMA,
            )
        )
    return out


def write(root, data, **kwargs):
    writer = ShardWriter(root, "sft", SCHEMA, **kwargs)
    for batch in data:
        writer.write(batch)
    return writer, writer.close()


def test_shards_are_capped_by_size_and_named_like_push_to_hub(tmp_path):
    cap = 8_000
    writer, shards = write(tmp_path, batches(30, 10), max_bytes=cap)
    total = len(shards)
    assert total >= 3
    names = [f"train-{i:05d}-of-{total:05d}.parquet" for i in range(total)]
    directory = tmp_path / "data" / "sft"
    # Nothing else in the folder: the temporary .part-* names are all renamed.
    assert sorted(p.name for p in directory.iterdir()) == names
    assert [s.path for s in shards] == [f"data/sft/{name}" for name in names]
    assert [s.local for s in shards] == [directory / name for name in names]
    assert sum(s.rows for s in shards) == writer.rows == 300
    ids = []
    for shard in shards:
        table = pq.read_table(shard.local)
        assert table.schema.equals(SCHEMA)
        assert table.num_rows == shard.rows
        assert shard.rows % 10 == 0  # cut between the caller's batches, never inside one
        assert shard.size == shard.local.stat().st_size
        assert shard.sha256 == hashlib.sha256(shard.local.read_bytes()).hexdigest()
        ids += table.column("id").to_pylist()
    assert ids == list(range(300))  # every row once, in order
    assert all(s.size >= cap for s in shards[:-1])
    assert shards[-1].rows > 0


def test_every_batch_past_the_cap_closes_its_shard(tmp_path):
    # A batch bigger than the cap is a whole shard; the last write closing a shard leaves no
    # empty shard behind.
    writer, shards = write(tmp_path, [*batches(2, 10), batches(1, 5, seed=8)[0]], max_bytes=1)
    assert [(s.path, s.rows) for s in shards] == [
        ("data/sft/train-00000-of-00003.parquet", 10),
        ("data/sft/train-00001-of-00003.parquet", 10),
        ("data/sft/train-00002-of-00003.parquet", 5),
    ]
    assert writer.rows == 25


def test_a_config_under_the_cap_is_one_shard(tmp_path):
    writer, shards = write(tmp_path, batches(5, 10))
    assert writer.max_bytes == DEFAULT_MAX_SHARD_BYTES == 500 * 1024 * 1024
    assert [(s.path, s.rows) for s in shards] == [("data/sft/train-00000-of-00001.parquet", 50)]


def test_shards_take_the_split_name(tmp_path):
    _, shards = write(tmp_path, batches(2, 10), max_bytes=1, split="test")
    assert [s.path for s in shards] == [
        "data/sft/test-00000-of-00002.parquet",
        "data/sft/test-00001-of-00002.parquet",
    ]


def test_a_config_with_no_rows_has_no_shard(tmp_path):
    # `datasets` cannot load a split from a parquet file without rows, so none is written (and
    # the card leaves the config out).
    writer = ShardWriter(tmp_path, "rl", SCHEMA, max_bytes=1)
    writer.write(pa.RecordBatch.from_pylist([], schema=SCHEMA))  # ignored: no rows
    assert writer.close() == []
    assert writer.rows == 0
    assert list((tmp_path / "data" / "rl").iterdir()) == []


def test_shards_load_back_with_datasets(tmp_path):
    datasets = pytest.importorskip("datasets")
    data = batches(30, 10)
    write(tmp_path, data, max_bytes=8_000)
    ds = datasets.load_dataset(
        "parquet",
        data_files={"train": str(tmp_path / "data" / "sft" / "train-*.parquet")},
        split="train",
        cache_dir=str(tmp_path / "cache"),
    )
    assert ds.num_rows == 300
    expected = pa.Table.from_batches(data).to_pylist()
    assert sorted(ds.to_list(), key=lambda row: row["id"]) == expected
    assert ds[4]["messages"] == [
        {"role": "user", "content": "q4"},
        {"role": "assistant", "content": expected[4]["text"]},
    ]


def test_the_same_batches_give_the_same_bytes(tmp_path):
    data = batches(30, 10)
    _, first = write(tmp_path / "a", data, max_bytes=8_000)
    _, second = write(tmp_path / "b", data, max_bytes=8_000)
    assert len(first) == len(second) >= 3
    for one, two in zip(first, second, strict=True):
        assert (one.path, one.rows, one.size, one.sha256, one.git_oid) == (
            two.path,
            two.rows,
            two.size,
            two.sha256,
            two.git_oid,
        )
        assert one.local.read_bytes() == two.local.read_bytes()


def test_a_changed_row_changes_only_its_shard(tmp_path):
    data = batches(6, 10)
    _, before = write(tmp_path / "a", data, max_bytes=1)
    changed = [*data[:3], batches(1, 10, seed=99)[0], *data[4:]]
    _, after = write(tmp_path / "b", changed, max_bytes=1)
    assert [a.sha256 == b.sha256 for a, b in zip(before, after, strict=True)] == [
        True,
        True,
        True,
        False,
        True,
        True,
    ]


def git_hash_object(path) -> str:
    return subprocess.run(
        ["git", "hash-object", "--no-filters", str(path)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def test_file_digests_are_sha256_and_the_git_blob_id(tmp_path):
    path = tmp_path / "file.bin"
    content = b"hello\x00world\n" * 100_000  # over the 1 MiB read chunk
    path.write_bytes(content)
    assert file_digests(path) == (
        hashlib.sha256(content).hexdigest(),
        git_hash_object(path),
        len(content),
    )


def test_file_digests_of_an_empty_file(tmp_path):
    path = tmp_path / "empty"
    path.write_bytes(b"")
    assert file_digests(path) == (
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391",
        0,
    )


def test_shard_git_oid_is_what_git_computes(tmp_path):
    _, shards = write(tmp_path, batches(4, 10), max_bytes=1)
    assert [s.git_oid for s in shards] == [git_hash_object(s.local) for s in shards]


@pytest.mark.parametrize("max_bytes", [0, -1])
def test_a_cap_that_is_not_positive_is_refused(tmp_path, max_bytes):
    with pytest.raises(ValueError, match=r"^max_bytes must be positive$"):
        ShardWriter(tmp_path, "sft", SCHEMA, max_bytes=max_bytes)
    assert not (tmp_path / "data").exists()
