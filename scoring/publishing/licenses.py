"""Which prompt-set licences a release may mix, and under which release licence.

A release carries one licence (THINKPOOL_RELEASE["license"], a Hub licence id). A prompt set
goes into it only when its own licence lets its prompts be redistributed under that one:

* permissive licences (MIT, Apache-2.0, BSD, CC0, CC-BY, ODC-By, ...) go into any release: they
  ask for attribution, which the dataset card gives by listing every source and licence;
* share-alike (CC-BY-SA, ODbL, CC-BY-NC-SA, ...) needs a release under the same licence, or a
  later version where the licence allows that; non-commercial (CC-BY-NC) any NC release;
* anything else (an unknown id, "other", a proprietary or no-derivatives licence) goes into no
  release: we cannot tell it is allowed, so it is left out with a warning, never guessed.

Ids are compared case-insensitively, as the Hub writes them (apache-2.0, cc-by-4.0).
"""

from __future__ import annotations

from dataclasses import dataclass

PERMISSIVE = frozenset(
    {
        "apache-2.0",
        "mit",
        "bsd",
        "bsd-2-clause",
        "bsd-3-clause",
        "isc",
        "zlib",
        "unlicense",
        "cc0-1.0",
        "cc-by-2.0",
        "cc-by-3.0",
        "cc-by-4.0",
        "odc-by",
        "pddl",
        "cdla-permissive-1.0",
        "cdla-permissive-2.0",
    }
)
NON_COMMERCIAL = frozenset({"cc-by-nc-2.0", "cc-by-nc-3.0", "cc-by-nc-4.0"})
# Share-alike sources, by the release licences each may be adapted under: its own, or a later
# version where the licence allows that (CC BY-SA 3.0 §4(b), BY-NC-SA 3.0 §4(b)). ODbL and
# CDLA-Sharing allow only themselves.
SHARE_ALIKE: dict[str, frozenset[str]] = {
    "cc-by-sa-3.0": frozenset({"cc-by-sa-3.0", "cc-by-sa-4.0"}),
    "cc-by-sa-4.0": frozenset({"cc-by-sa-4.0"}),
    "odbl": frozenset({"odbl"}),
    "cdla-sharing-1.0": frozenset({"cdla-sharing-1.0"}),
    "cc-by-nc-sa-2.0": frozenset({"cc-by-nc-sa-2.0", "cc-by-nc-sa-3.0", "cc-by-nc-sa-4.0"}),
    "cc-by-nc-sa-3.0": frozenset({"cc-by-nc-sa-3.0", "cc-by-nc-sa-4.0"}),
    "cc-by-nc-sa-4.0": frozenset({"cc-by-nc-sa-4.0"}),
}
NC_RELEASES = NON_COMMERCIAL | {lic for lic in SHARE_ALIKE if lic.startswith("cc-by-nc-sa")}
RELEASE_LICENSES = PERMISSIVE | NON_COMMERCIAL | frozenset(SHARE_ALIKE)


def normalise(license_id: str) -> str:
    return license_id.strip().lower()


def is_known_release_license(license_id: str) -> bool:
    return normalise(license_id) in RELEASE_LICENSES


def _allowed(source: str, release: str) -> bool:
    if source in PERMISSIVE:
        return True  # attribution only: the card lists the source
    if source in SHARE_ALIKE:
        return release in SHARE_ALIKE[source]
    if source in NON_COMMERCIAL:
        # Adaptable under any licence that keeps the NC terms.
        return release in NC_RELEASES
    return False


@dataclass(frozen=True)
class Decision:
    included: bool
    reason: str = ""


def admits(*, release_license: str, source_license: str, redistributable: bool) -> Decision:
    """Whether prompts under `source_license` may go into a release under `release_license`."""
    if not redistributable:
        return Decision(False, "marked not redistributable")
    source = normalise(source_license)
    release = normalise(release_license)
    if release not in RELEASE_LICENSES:
        return Decision(False, f"release licence {release_license!r} is not one this knows")
    if not source:
        return Decision(False, "no licence given")
    if _allowed(source, release):
        return Decision(True)
    if source not in RELEASE_LICENSES:
        return Decision(False, f"licence {source_license!r} is not one known to allow this")
    return Decision(False, f"licence {source_license!r} cannot be released under {release}")
