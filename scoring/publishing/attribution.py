"""How a release names the contributor of each row, without `scoring` knowing accounts.

`scoring` may not import `contributors` (docs/architecture.md), where handles and the choice to
be credited live. The platform hands in a provider at start-up (contributors.apps); a release
asks it once per batch of rows, while it is built, so the choice in force at build time is the
one published. With no provider registered every row says "anonymous": failing closed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

ANONYMOUS = "anonymous"

# user ids -> {user id: public handle, or None for a contributor who chose not to be named}.
# Ids it does not return are anonymous too.
Provider = Callable[[Iterable[int]], dict[int, str | None]]

_provider: Provider | None = None


def register(provider: Provider | None) -> None:
    global _provider
    _provider = provider


class Attribution:
    """The credit line of each contributor of one release, asked once per contributor."""

    def __init__(self) -> None:
        self._names: dict[int, str] = {}

    def names(self, user_ids: Iterable[int]) -> dict[int, str]:
        missing = {uid for uid in user_ids if uid not in self._names}
        if missing:
            given = _provider(sorted(missing)) if _provider is not None else {}
            for uid in missing:
                self._names[uid] = given.get(uid) or ANONYMOUS
        return self._names

    def credited(self) -> list[str]:
        """The handles of contributors who chose to be named, sorted."""
        return sorted({name for name in self._names.values() if name != ANONYMOUS})
