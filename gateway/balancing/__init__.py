"""Replica choice per model: one balancing policy per module, behind `policy.Balancer`."""
