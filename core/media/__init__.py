"""Pictures and voice: values and ports, the media steps of a turn, and their Pillow,
ffmpeg and OpenAI implementations."""
