"""Signals the dataset sends to the packages built on it (scoring imports none of them)."""

from django.dispatch import Signal

# Sent inside the transaction that closes prompts to collection, with `prompt_ids`: the prompts
# closed now, locked. contributors.services.ledger takes their slots out of the pool.
prompts_closed = Signal()
