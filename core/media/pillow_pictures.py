"""The ``PictureProcessor`` port on Pillow (HEIC through pillow-heif).

Pillow is imported with the first picture, not at start-up: a process that is never sent
one does not pay the memory of its decoders (issue 17). The work is in
``core.media.pillow_images``.
"""

from __future__ import annotations

from core.media.ports import PreparedImage


class PillowPictures:
    """``PictureProcessor`` with Pillow (HEIC through pillow-heif)."""

    def prepare(self, data: bytes, *, max_input_bytes: int) -> PreparedImage:
        """Check and convert a picture the user sent into one the model takes."""
        from core.media import pillow_images

        return pillow_images.prepare_image(data, max_input_bytes=max_input_bytes)

    def history_copy(self, image: PreparedImage) -> PreparedImage:
        """A small copy of ``image`` for conversation history."""
        from core.media import pillow_images

        return pillow_images.history_copy(image)

    def for_edit(self, image: PreparedImage) -> PreparedImage:
        """``image`` as the image edit API takes it."""
        from core.media import pillow_images

        return pillow_images.for_edit(image)
