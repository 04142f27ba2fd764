"""A lean pooled HTTP/1.1 client for the proxied model calls (`pool.Pool`)."""
