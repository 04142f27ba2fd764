"""What each API key used (the ledger, per key x model x hour) and the keys made at run time,
kept in one database (SQLite by default, PostgreSQL with `gateway.usage.database_url`)."""
