"""`balancing: kv_aware`: route on what each engine reports it has cached (vLLM KV events).

wire.py (the events' msgpack format), hashing.py (vLLM's block hashes of a request's tokens),
index.py (engine -> cached block hashes, bounded), feed.py (one ZMQ subscription per engine,
rebuilt from the replay socket), tokens.py (a request's token ids from the engine's /tokenize),
policy.py (the choice). docs/balancing.md has the algorithm and its bounds.
"""
