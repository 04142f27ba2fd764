"""The audit trail: one JSON line per finished request and per admin action (`gateway.audit`)."""
