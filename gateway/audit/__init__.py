"""The audit trail read back (`orchestra audit tail|query`); its lines are written by
`orchestra/audit/` (the gateway's and the supervisor's, one file: `gateway.audit`)."""
