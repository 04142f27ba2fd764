"""The cluster view: the routing table, the supervisors behind it and their nodes."""
