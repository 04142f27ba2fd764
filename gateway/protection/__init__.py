"""Protection: per-key rate limits, per-model admission, the retry budget."""
