"""scoring.publishing.licenses: which prompt-set licences a release may carry, with the reason
shown in the release's warnings and on its card."""

import pytest

from scoring.publishing import licenses
from scoring.publishing.licenses import Decision, admits, is_known_release_license

INCLUDED = Decision(True, "")


def test_permissive_source_goes_into_a_permissive_release():
    assert admits(release_license="apache-2.0", source_license="mit", redistributable=True) == (
        INCLUDED
    )


def test_licence_ids_are_compared_case_insensitively_and_stripped():
    assert admits(release_license="Apache-2.0", source_license="MIT", redistributable=True) == (
        INCLUDED
    )
    assert admits(
        release_license=" CC-BY-4.0 ", source_license=" Apache-2.0\n", redistributable=True
    ) == (INCLUDED)


@pytest.mark.parametrize(
    "release",
    ["mit", "cc-by-4.0", "cc-by-sa-4.0", "cc-by-nc-4.0", "cc-by-nc-sa-4.0", "odbl"],
)
def test_permissive_source_goes_into_every_known_release(release):
    assert admits(release_license=release, source_license="cc0-1.0", redistributable=True) == (
        INCLUDED
    )


def test_share_alike_source_goes_into_a_share_alike_release():
    assert admits(
        release_license="cc-by-sa-4.0", source_license="CC-BY-SA-4.0", redistributable=True
    ) == (INCLUDED)


@pytest.mark.parametrize(
    ("release", "reason"),
    [
        ("apache-2.0", "licence 'CC-BY-SA-4.0' cannot be released under apache-2.0"),
        ("cc-by-4.0", "licence 'CC-BY-SA-4.0' cannot be released under cc-by-4.0"),
        ("CC-BY-NC-4.0", "licence 'CC-BY-SA-4.0' cannot be released under cc-by-nc-4.0"),
    ],
)
def test_share_alike_source_is_refused_by_other_releases(release, reason):
    assert admits(
        release_license=release, source_license="CC-BY-SA-4.0", redistributable=True
    ) == Decision(False, reason)


def test_non_commercial_source_goes_into_a_non_commercial_release():
    for release in ("cc-by-nc-4.0", "cc-by-nc-sa-4.0"):
        assert admits(
            release_license=release, source_license="cc-by-nc-4.0", redistributable=True
        ) == (INCLUDED)


@pytest.mark.parametrize(
    ("release", "reason"),
    [
        ("mit", "licence 'cc-by-nc-4.0' cannot be released under mit"),
        ("cc-by-sa-4.0", "licence 'cc-by-nc-4.0' cannot be released under cc-by-sa-4.0"),
    ],
)
def test_non_commercial_source_is_refused_by_commercial_releases(release, reason):
    assert admits(
        release_license=release, source_license="cc-by-nc-4.0", redistributable=True
    ) == Decision(False, reason)


def test_non_commercial_share_alike_source_goes_only_into_an_nc_sa_release():
    assert admits(
        release_license="cc-by-nc-sa-4.0", source_license="cc-by-nc-sa-4.0", redistributable=True
    ) == (INCLUDED)
    for release in ("apache-2.0", "cc-by-sa-4.0", "cc-by-nc-4.0"):
        assert admits(
            release_license=release, source_license="cc-by-nc-sa-4.0", redistributable=True
        ) == Decision(False, f"licence 'cc-by-nc-sa-4.0' cannot be released under {release}")


def test_share_alike_source_is_refused_by_an_nc_sa_release():
    assert admits(
        release_license="cc-by-nc-sa-4.0", source_license="cc-by-sa-4.0", redistributable=True
    ) == Decision(False, "licence 'cc-by-sa-4.0' cannot be released under cc-by-nc-sa-4.0")


@pytest.mark.parametrize(
    ("release", "source"),
    [("cc-by-sa-4.0", "odbl"), ("cc-by-sa-3.0", "cc-by-sa-4.0")],
)
def test_share_alike_sources_go_only_into_a_compatible_share_alike_release(release, source):
    assert admits(release_license=release, source_license=source, redistributable=True) == (
        Decision(False, f"licence {source!r} cannot be released under {release}")
    )


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ("other", "licence 'other' is not one known to allow this"),
        ("proprietary", "licence 'proprietary' is not one known to allow this"),
        ("CC-BY-ND-4.0", "licence 'CC-BY-ND-4.0' is not one known to allow this"),
        ("gpl-3.0", "licence 'gpl-3.0' is not one known to allow this"),
        ("", "no licence given"),
        ("   ", "no licence given"),
    ],
)
def test_unknown_or_missing_source_licence_is_left_out_with_its_reason(source, reason):
    for release in ("apache-2.0", "cc-by-nc-sa-4.0"):
        assert admits(
            release_license=release, source_license=source, redistributable=True
        ) == Decision(False, reason)


@pytest.mark.parametrize(
    ("release", "source"),
    [
        ("apache-2.0", "mit"),
        ("cc-by-nc-sa-4.0", "cc0-1.0"),
        ("cc-by-sa-4.0", "cc-by-sa-4.0"),
        ("apache-2.0", ""),
        ("not-a-licence", "mit"),
    ],
)
def test_non_redistributable_set_is_left_out_whatever_the_licence(release, source):
    assert admits(
        release_license=release, source_license=source, redistributable=False
    ) == Decision(False, "marked not redistributable")


@pytest.mark.parametrize("source", ["mit", "cc-by-sa-4.0", "cc-by-nc-4.0", "", "other"])
def test_unknown_release_licence_refuses_everything(source):
    assert admits(release_license="Other", source_license=source, redistributable=True) == Decision(
        False, "release licence 'Other' is not one this knows"
    )


def test_empty_release_licence_refuses_everything():
    assert admits(release_license="", source_license="mit", redistributable=True) == Decision(
        False, "release licence '' is not one this knows"
    )


@pytest.mark.parametrize(
    "license_id",
    [
        "apache-2.0",
        "MIT",
        " Apache-2.0 ",
        "cc-by-sa-4.0",
        "ODbL",
        "cc-by-nc-4.0",
        "CC-BY-NC-SA-4.0",
    ],
)
def test_is_known_release_license_accepts_every_family(license_id):
    assert is_known_release_license(license_id) is True


@pytest.mark.parametrize(
    "license_id", ["", "other", "unknown", "cc-by-nd-4.0", "gpl-3.0", "apache", "mit license"]
)
def test_is_known_release_license_refuses_the_rest(license_id):
    assert is_known_release_license(license_id) is False


def test_every_family_member_is_a_known_release_licence():
    families = (
        licenses.PERMISSIVE,
        frozenset(licenses.SHARE_ALIKE),
        licenses.NON_COMMERCIAL,
    )
    every = frozenset().union(*families)
    assert sum(len(f) for f in families) == len(every)  # no licence in two families
    assert all(is_known_release_license(lic) for lic in every)
    # A release admits sources under its own licence.
    assert all(
        admits(release_license=lic, source_license=lic, redistributable=True) == INCLUDED
        for lic in every
    )
