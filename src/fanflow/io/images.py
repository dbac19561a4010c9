"""`images` of the llm node: paths or URLs → provider-neutral images.

A URL (``http(s)://``) is passed to the provider, which fetches it; a ``data:`` URL and a local
file are sent inline as base64. Relative paths are relative to the working directory, like
read-file's. Formats: PNG, JPEG, GIF, WebP (what both OpenAI and Anthropic accept).
"""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from typing import Any

from fanflow.io.providers import Image

MEDIA_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
}
MAX_IMAGE_BYTES = 20 * 1024 * 1024


class ImageError(ValueError):
    pass


def is_url(text: str) -> bool:
    return text.startswith(("http://", "https://", "data:"))


def load_images(spec: Any) -> list[Image]:
    if spec is None or spec == "" or spec == []:
        return []
    items = [spec] if isinstance(spec, str) else spec
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        raise ImageError("'images' must be a list of paths or URLs")
    return [_one(item.strip()) for item in items]


def _one(item: str) -> Image:
    if item.startswith(("http://", "https://")):
        return Image(url=item)
    if item.startswith("data:"):
        head, sep, data = item.partition(",")
        media = head[5:].split(";")[0]
        if not sep or ";base64" not in head or not media.startswith("image/"):
            raise ImageError("a data: image must look like data:image/png;base64,...")
        return Image(media_type=media, data=data)
    path = Path(item).expanduser()
    kind = MEDIA_TYPES.get(path.suffix.lower())
    if kind is None:
        raise ImageError(
            f"image {item}: unsupported format (use {', '.join(sorted(MEDIA_TYPES))}, or a URL)"
        )
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ImageError(f"cannot read image {item}: {exc.strerror or exc}") from None
    if len(raw) > MAX_IMAGE_BYTES:
        raise ImageError(f"image {item} is larger than {MAX_IMAGE_BYTES // 2**20} MB")
    return Image(media_type=kind, data=base64.b64encode(raw).decode("ascii"))


def image_digest(img: Image) -> str:
    """What identifies an image in the cache key: its URL, or the digest of its bytes."""
    if img.url:
        return img.url
    return hashlib.sha256((img.data or "").encode("ascii")).hexdigest()


__all__ = ["MEDIA_TYPES", "ImageError", "image_digest", "is_url", "load_images"]
