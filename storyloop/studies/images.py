"""Image bytes that name no model: every study image is re-encoded as a bare PNG.

Annotators must not learn an arm from the bytes they download, so nothing an encoder or a tool wrote
survives: text chunks (diffusers, ComfyUI and A1111 write prompts and model names there), EXIF, XMP,
ICC profiles. Only the pixels are kept (EXIF orientation applied first, so the picture stands as it did).
"""

from __future__ import annotations

import io

from PIL import Image, ImageOps

KEPT_MODES = ("RGB", "RGBA", "L", "LA")


def clean_png(image: Image.Image) -> bytes:
    """The pixels of `image` as a PNG with no metadata chunks."""
    image = ImageOps.exif_transpose(image)
    if image.mode not in KEPT_MODES:
        has_alpha = "A" in image.mode or "transparency" in image.info
        image = image.convert("RGBA" if has_alpha else "RGB")
    bare = Image.frombytes(image.mode, image.size, image.tobytes())  # a new image: no .info, no profile
    buf = io.BytesIO()
    bare.save(buf, format="PNG")
    return buf.getvalue()


def png_chunk_types(data: bytes) -> list[str]:
    """The chunk types of a PNG, in order (to check that only pixels are there)."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    out, pos = [], 8
    while pos + 8 <= len(data):
        length = int.from_bytes(data[pos:pos + 4], "big")
        out.append(data[pos + 4:pos + 8].decode("latin-1"))
        pos += 12 + length
    return out
