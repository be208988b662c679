"""The image tool: the model draws a picture when the user asks for one, and it is shown at
once; the picture is charged to the turn's payer and kept with the reply."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from core.conversation.events import ImageReady
from core.media.steps import MediaSteps
from core.tools.toolbox import Tool, ToolContext, tool

DRAW_TOOL = "generate_image"


def drawing_tool(media: MediaSteps) -> Tool:
    """The ``generate_image`` tool, drawing with ``media``."""

    @tool(name=DRAW_TOOL)
    async def generate_image(
        prompt: Annotated[str, Field(description="A detailed description of the picture to draw.")],
        context: ToolContext,
    ) -> str:
        """Draw a picture and show it to the user. Use only when the user asks for an image,
        drawing, illustration or photo to be made."""
        picture, kept, record = await media.draw(prompt, context.charge)
        context.usage.append(record)
        context.images.append(kept)
        await context.emit(ImageReady(picture, picture.revised_prompt))
        return f"The picture was drawn and shown to the user: {picture.revised_prompt or prompt}"

    return generate_image
