"""Image input: safe decoding, safe URL fetching, and the artifact store.

* :mod:`modomo.images.loading` -- :func:`probe_image` / :func:`load_image` turn untrusted
  bytes into ``(H, W, 3) uint8`` RGB arrays or a clear :class:`ImageError`.
* :mod:`modomo.images.fetch` -- :func:`fetch_image` downloads an image URL with an SSRF
  guard, size and time limits, raising :class:`FetchError`.
* :mod:`modomo.images.store` -- :class:`ArtifactStore` keeps bytes under relative keys on
  any fsspec filesystem; :func:`image_key` names images by content hash.

None of these read settings or environment variables: callers pass limits explicitly.
"""

from modomo.images.fetch import (
    MAX_REDIRECTS,
    FetchedImage,
    FetchError,
    check_url_allowed,
    fetch_image,
)
from modomo.images.loading import (
    SUPPORTED_FORMATS,
    ImageError,
    ImageInfo,
    LoadedImage,
    load_image,
    probe_image,
    sniff_mime,
)
from modomo.images.store import IMAGE_EXTENSIONS, ArtifactStore, image_key, validate_key

__all__ = [
    "IMAGE_EXTENSIONS",
    "MAX_REDIRECTS",
    "SUPPORTED_FORMATS",
    "ArtifactStore",
    "FetchError",
    "FetchedImage",
    "ImageError",
    "ImageInfo",
    "LoadedImage",
    "check_url_allowed",
    "fetch_image",
    "image_key",
    "load_image",
    "probe_image",
    "sniff_mime",
    "validate_key",
]
