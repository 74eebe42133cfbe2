"""A sort key that orders tag names by version, so the database can sort 10,000 tags on an index.

`version_sort_key(name)` returns a string whose plain ascending order is: versions from the
highest to the lowest (PEP 440 order through `packaging`, so `v2.0.0` > `2.0.0-rc.1` > `1.10` >
`1.9`), then every tag that is not a version (`latest`, `main-3f2a1c`, `sha256-….sig`) by name.
Tags naming the same version (`1.0`, `v1.0`, `1.0.0`) fall back to name order.
"""

from __future__ import annotations

from packaging.version import InvalidVersion, Version

# A tag has at most 128 characters and each adds at most 2.5 characters of key, plus the name.
VERSION_KEY_MAX_LENGTH = 512

_PRE_RELEASE_RANK = {"a": "0", "b": "1", "rc": "2"}
# Digit complement: applied to the whole version part, it turns ascending order into descending.
_COMPLEMENT = str.maketrans("0123456789", "9876543210")


def _number(value: int) -> str:
    """Length-prefixed digits: compares like the number, and no encoding is a prefix of another."""
    digits = str(value)
    return f"{len(digits):03d}{digits}"


def _encode(version: Version) -> str:
    """Version parts in PEP 440 precedence, as self-delimiting digit tokens."""
    release = list(version.release)
    while release and release[-1] == 0:
        release.pop()
    parts = [_number(version.epoch)]
    parts += ["1" + _number(component) for component in release]
    parts.append("0")
    # A dev release with no pre or post part sorts before the pre-releases: 1.0.dev0 < 1.0a1 < 1.0.
    if version.pre is not None:
        letter, number = version.pre
        parts.append("1" + _PRE_RELEASE_RANK[letter] + _number(number))
    elif version.post is None and version.dev is not None:
        parts.append("0")
    else:
        parts.append("2")
    parts.append("0" if version.post is None else "1" + _number(version.post))
    parts.append("1" if version.dev is None else "0" + _number(version.dev))
    return "".join(parts)


def version_sort_key(tag_name: str) -> str:
    """Ascending order of these keys is highest version first, then non-versions by name."""
    try:
        version = Version(tag_name)
    except InvalidVersion:
        return "1" + tag_name
    return "0" + _encode(version).translate(_COMPLEMENT) + tag_name
