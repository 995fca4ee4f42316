"""Signals the dataset sends to the packages built on it (scoring imports none of them)."""

from django.dispatch import Signal

# Sent inside the transaction that closes prompts to collection, with `prompt_ids`: the prompts
# closed now, locked. contributors.services.ledger takes their slots out of the pool.
prompts_closed = Signal()

# Sent inside the transaction that changed them, with `prompt_ids`: prompts whose disclosed
# judgement changed (they closed now, or a sample of a closed prompt changed status). What is
# built on disclosed verdicts (contributors' credit, data bounties) settles these prompts
# again, on commit. Never sent for open prompts: their verdicts are not disclosed to anyone.
disclosed_changed = Signal()
