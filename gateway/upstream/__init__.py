"""Calls to engines: the proxy and its stream relay, replica health, the Ollama backend."""
