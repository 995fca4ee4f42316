"""Releases: the dataset as versioned parquet shards and a dataset card, at a local git folder
laid out like the Hub repository or on the Hugging Face Hub.

    licenses.py     which prompt-set licences a release may mix
    attribution.py  contributor credit, through an interface the platform provides
    rows.py         the configs (sft, preference, rl, raw), their columns, and the reader
    shards.py       size-capped parquet shards, written as rows stream in
    card.py         the dataset card: YAML configs and generated statistics
    targets.py      the local and Hub targets
    service.py      start_release / run_release: the release's states, once and only once
"""
