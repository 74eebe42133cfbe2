"""Media types of the manifests and configs a registry serves."""

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json"
DOCKER_SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"

DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"

# What delete_tag pushes over a tag before deleting it on registries without a tag-delete API;
# the sync can recognise (and ignore) these if it sees one mid-flight.
TOMBSTONE_ARTIFACT_TYPE = "application/vnd.registry-browser.tombstone.v1+json"

IMAGE_MANIFESTS = frozenset({DOCKER_MANIFEST, OCI_MANIFEST})
INDEXES = frozenset({DOCKER_MANIFEST_LIST, OCI_INDEX})
SCHEMA1 = frozenset({DOCKER_SCHEMA1, DOCKER_SCHEMA1_SIGNED})
IMAGE_CONFIGS = frozenset({DOCKER_CONFIG, OCI_CONFIG})

# Distribution only returns OCI content when the OCI types are listed, and converts Docker
# schema2 to schema1 (with a different digest) when schema2 is missing, so all four are always
# sent. Schema1 is listed last so legacy content comes back as itself instead of a 404.
MANIFEST_ACCEPT = ", ".join(
    [
        OCI_INDEX,
        OCI_MANIFEST,
        DOCKER_MANIFEST_LIST,
        DOCKER_MANIFEST,
        f"{DOCKER_SCHEMA1_SIGNED};q=0.5",
        f"{DOCKER_SCHEMA1};q=0.5",
    ]
)


def normalize(content_type: str | None) -> str:
    """`application/json; charset=utf-8` -> `application/json`; None -> ''."""
    return (content_type or "").split(";", 1)[0].strip().lower()
