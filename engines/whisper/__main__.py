"""`python -m orchestra.engines.whisper`: see cli.py for the arguments."""

from .cli import main

raise SystemExit(main())
