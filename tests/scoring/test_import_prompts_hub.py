"""`import_prompts org/name[:split]`: a dataset read from a Hub repository with huggingface_hub
(not `datasets`, which the platform never imports), against the test Hub server."""

from __future__ import annotations

import io
import json
from io import StringIO

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from django.core.management import CommandError, call_command
from huggingface_hub import CommitOperationAdd, HfApi

from scoring.models import Prompt, PromptGold
from scoring.prompt_io import _split_files
from tests.fixtures.hub_server import hub_server_fixture  # noqa: F401

pytestmark = pytest.mark.django_db


def parquet_bytes(rows: list[dict]) -> bytes:
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), sink)
    return sink.getvalue()


def test_split_files_follow_the_hub_naming():
    paths = [
        "README.md",
        "data/train-00000-of-00002.parquet",
        "data/train-00001-of-00002.parquet",
        "data/test-00000-of-00001.parquet",
        "train.jsonl",
        "trainer/notes.json",
        "other/validation.csv",
    ]
    assert _split_files(paths, "train") == [
        "data/train-00000-of-00002.parquet",
        "data/train-00001-of-00002.parquet",
        "train.jsonl",
    ]
    assert _split_files(paths, "validation") == ["other/validation.csv"]


def test_import_a_split_of_a_hub_dataset(hub_server):
    api = HfApi(endpoint=hub_server.url, token="hf_test")
    api.create_repo("org/problems", repo_type="dataset")
    api.create_commit(
        "org/problems",
        repo_type="dataset",
        commit_message="data",
        operations=[
            CommitOperationAdd(
                "data/train-00000-of-00001.parquet",
                parquet_bytes(
                    [
                        {"question": "What is 2+2?", "final": "4"},
                        {"question": "What is 3+3?", "final": "6"},
                    ]
                ),
            ),
            CommitOperationAdd(
                "data/test-00000-of-00001.jsonl",
                b'{"question": "Held out?", "final": "1"}\n',
            ),
        ],
    )
    out = StringIO()
    call_command(
        "import_prompts",
        "org/problems:train",
        "--set",
        "hub-set",
        "--domain",
        "math",
        "--license",
        "MIT",
        "--field-map",
        "prompt=question,answer=final",
        stdout=out,
        stderr=StringIO(),
    )
    assert json.loads(out.getvalue())["created"] == 2
    prompts = Prompt.objects.filter(prompt_set__name="hub-set").order_by("seq")
    assert [p.messages[-1]["content"] for p in prompts] == ["What is 2+2?", "What is 3+3?"]
    assert sorted(PromptGold.objects.values_list("answer", flat=True)) == ["4", "6"]


def test_a_split_the_dataset_does_not_have_is_a_clear_error(hub_server):
    HfApi(endpoint=hub_server.url, token="hf_test").create_repo("org/empty", repo_type="dataset")
    with pytest.raises(
        CommandError, match=r"no \.parquet/\.jsonl/\.json/\.csv files for split 'train'"
    ):
        call_command(
            "import_prompts",
            "org/empty",
            "--set",
            "x",
            "--domain",
            "math",
            "--license",
            "MIT",
            stdout=StringIO(),
            stderr=StringIO(),
        )
    assert not Prompt.objects.exists()
