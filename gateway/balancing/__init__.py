"""Balancing policies that look at the request (prefix-cache affinity, session affinity)."""
