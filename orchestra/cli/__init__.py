"""The `orchestra` command (`python -m orchestra.cli`): the entry point (`main`), the control
API's commands as tables (`ctl`, rendered by `status_view`, looped by `live`) and
`orchestra adapters` (`adapters`). `orchestra batch` lives in `orchestra.batch`, `orchestra ray`
in `orchestra.cluster`."""

from orchestra.cli.main import main

__all__ = ["main"]
