"""scoring.publishing.attribution: how a release names each row's contributor, through the
provider the platform registers (contributors.selectors.public_handles)."""

import pytest

from scoring.publishing import attribution
from scoring.publishing.attribution import ANONYMOUS, Attribution


class CountingProvider:
    """A provider that records every call: {user id: handle or None}; other ids are left out."""

    def __init__(self, known: dict[int, str | None]) -> None:
        self.known = known
        self.calls: list[list[int]] = []

    def __call__(self, user_ids):
        ids = list(user_ids)
        self.calls.append(ids)
        return {uid: self.known[uid] for uid in ids if uid in self.known}


@pytest.fixture
def provider(monkeypatch):
    """Registers a fresh CountingProvider; monkeypatch puts the platform's back afterwards."""
    counting = CountingProvider({1: "alice", 2: None, 3: "carol", 4: ""})
    monkeypatch.setattr(attribution, "_provider", counting)
    return counting


def test_with_no_provider_every_contributor_is_anonymous(monkeypatch):
    monkeypatch.setattr(attribution, "_provider", None)
    credit = Attribution()
    assert credit.names([1, 2, 3]) == {1: ANONYMOUS, 2: ANONYMOUS, 3: ANONYMOUS}
    assert credit.credited() == []
    assert ANONYMOUS == "anonymous"


def test_register_sets_and_clears_the_provider(monkeypatch):
    monkeypatch.setattr(attribution, "_provider", None)
    counting = CountingProvider({5: "eve"})
    attribution.register(counting)
    assert attribution._provider is counting
    assert Attribution().names([5]) == {5: "eve"}
    attribution.register(None)
    assert Attribution().names([5]) == {5: ANONYMOUS}


def test_names_map_handles_and_the_rest_is_anonymous(provider):
    credit = Attribution()
    # 2 chose not to be named, 4 has an empty handle, 9 is unknown to the provider.
    assert credit.names([1, 2, 3, 4, 9]) == {
        1: "alice",
        2: ANONYMOUS,
        3: "carol",
        4: ANONYMOUS,
        9: ANONYMOUS,
    }


def test_the_provider_is_asked_once_per_contributor(provider):
    credit = Attribution()
    credit.names([3, 1, 3, 2])
    credit.names([1, 2, 3])
    names = credit.names(iter([2, 9, 1, 9]))
    credit.names([])
    # Asked for the missing ids only, sorted and without repeats; never with an empty list.
    assert provider.calls == [[1, 2, 3], [9]]
    assert names == {1: "alice", 2: ANONYMOUS, 3: "carol", 9: ANONYMOUS}


def test_the_choice_is_taken_once_per_release(provider):
    credit = Attribution()
    assert credit.names([1])[1] == "alice"
    provider.known[1] = None  # alice opts out while the release is being built
    assert credit.names([1])[1] == "alice"
    # The next release asks again.
    assert Attribution().names([1]) == {1: ANONYMOUS}
    assert provider.calls == [[1], [1]]


def test_credited_is_the_named_handles_sorted(provider):
    provider.known.update({5: "bob", 6: "Zed", 7: "alice"})  # 7 shares a handle with 1
    credit = Attribution()
    assert credit.credited() == []
    credit.names([3, 2, 5])
    credit.names([6, 1, 4, 7, 9])
    assert credit.credited() == ["Zed", "alice", "bob", "carol"]


def test_a_failing_provider_fails_the_release(monkeypatch):
    def broken(user_ids):
        raise RuntimeError("database down")

    monkeypatch.setattr(attribution, "_provider", broken)
    with pytest.raises(RuntimeError, match=r"^database down$"):
        Attribution().names([1])


@pytest.mark.django_db
def test_the_platform_registers_public_handles():
    from contributors.models import Profile
    from contributors.selectors import public_handles
    from tests.factories import UserFactory

    assert attribution._provider is public_handles
    named = UserFactory(username="named")
    hidden = UserFactory(username="hidden")
    Profile.objects.filter(user=named).update(handle="named-handle")
    Profile.objects.filter(user=hidden).update(public_attribution=False)
    no_profile = UserFactory(username="no-profile")
    Profile.objects.filter(user=no_profile).delete()
    missing = no_profile.pk + 1000

    assert public_handles([named.pk, hidden.pk, no_profile.pk, missing]) == {
        named.pk: "named-handle",
        hidden.pk: None,
    }
    assert Attribution().names([named.pk, hidden.pk, no_profile.pk, missing]) == {
        named.pk: "named-handle",
        hidden.pk: ANONYMOUS,
        no_profile.pk: ANONYMOUS,
        missing: ANONYMOUS,
    }
