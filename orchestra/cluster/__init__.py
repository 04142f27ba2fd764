"""Orchestra on a Ray cluster: one supervisor per Ray node as a detached actor (`actor.py`), the
reconciler that gives every eligible node one (`reconcile.py`), `orchestra ray up|down`
(`cli.py`). Optional (`pip install 'orchestra[ray]'`): nothing else imports Ray."""
