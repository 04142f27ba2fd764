"""The engines Orchestra ships (engines/), run as subprocesses."""
