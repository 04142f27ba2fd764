"""Orchestra's data plane: an OpenAI-compatible gateway in front of vLLM engines."""
