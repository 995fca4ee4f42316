"""thinkpool-worker: the contributor's client.

It leases prompts from a Thinkpool server, generates chain-of-thought samples with the
contributor's own model (an OpenAI-compatible server, or transformers in-process), journals every
sample locally, and uploads them. It imports no Django and nothing else from this repository, so
it can be installed on a GPU box with only the ``worker`` extra (httpx, rich, tomli-w).
"""

__version__ = "0.1.0"
