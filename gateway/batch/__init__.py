"""OpenAI Files + Batches API on the gateway: store, validation, runner, routes."""
