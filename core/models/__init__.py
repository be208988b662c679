"""Models: the LLM gateway port, the registry of models and modes, and the OpenAI gateway."""
