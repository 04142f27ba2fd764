"""The one request pipeline: the call object and its steps (names, chains, ensembles, loading)."""
