"""Django-free reading of what CI attaches to an image: signatures, attestations, vulnerability
reports, SBOMs and build provenance.

`documents.read_document` turns the bytes of one attached payload into a Document (or an
"unreadable" one with the reason; it never raises); `signatures` checks cosign signatures and
DSSE envelopes against trusted public keys.

Each format is read with a few lines of plain JSON access rather than its library: the
dashboard needs a handful of fields (names, versions, ids, severities, dates), must accept
documents a strict validator would refuse (newer spec versions, tool-specific extras), and must
stay small at run time. The libraries (cyclonedx-python-lib, spdx-tools) produce the test
documents instead.
"""
