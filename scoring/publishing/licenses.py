"""Which prompt-set licences a release may mix, and under which release licence.

A release carries one licence (THINKPOOL_RELEASE["license"], a Hub licence id). A prompt set
goes into it only when its own licence lets its prompts be redistributed under that one:

* permissive licences (MIT, Apache-2.0, BSD, CC0, CC-BY, ODC-By, ...) go into any release: they
  ask for attribution, which the dataset card gives by listing every source and licence;
* share-alike (CC-BY-SA) needs a CC-BY-SA release; non-commercial (CC-BY-NC) an NC release, and
  both together CC-BY-NC-SA;
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
SHARE_ALIKE = frozenset({"cc-by-sa-3.0", "cc-by-sa-4.0", "odbl", "cdla-sharing-1.0"})
NON_COMMERCIAL = frozenset({"cc-by-nc-2.0", "cc-by-nc-3.0", "cc-by-nc-4.0"})
NC_SHARE_ALIKE = frozenset({"cc-by-nc-sa-2.0", "cc-by-nc-sa-3.0", "cc-by-nc-sa-4.0"})

# Release licence -> the families of source licences it can carry.
_ACCEPTS: dict[str, tuple[frozenset[str], ...]] = {
    **{lic: (PERMISSIVE,) for lic in PERMISSIVE},
    **{lic: (PERMISSIVE, SHARE_ALIKE) for lic in SHARE_ALIKE},
    **{lic: (PERMISSIVE, NON_COMMERCIAL) for lic in NON_COMMERCIAL},
    **{lic: (PERMISSIVE, SHARE_ALIKE, NON_COMMERCIAL, NC_SHARE_ALIKE) for lic in NC_SHARE_ALIKE},
}


def normalise(license_id: str) -> str:
    return license_id.strip().lower()


def is_known_release_license(license_id: str) -> bool:
    return normalise(license_id) in _ACCEPTS


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
    families = _ACCEPTS.get(release)
    if families is None:
        return Decision(False, f"release licence {release_license!r} is not one this knows")
    if not source:
        return Decision(False, "no licence given")
    if any(source in family for family in families):
        return Decision(True)
    if source not in _ACCEPTS:
        return Decision(False, f"licence {source_license!r} is not one known to allow this")
    return Decision(False, f"licence {source_license!r} cannot be released under {release}")
