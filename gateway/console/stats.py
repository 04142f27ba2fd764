"""The console's live rates: `orchestra.rates` (shared with `orchestra top`)."""

from orchestra.rates import (
    Counters,
    ModelRates,
    RateWindow,
    Snapshot,
    from_registry,
    from_text,
    rates,
)

__all__ = [
    "Counters",
    "ModelRates",
    "RateWindow",
    "Snapshot",
    "from_registry",
    "from_text",
    "rates",
]
