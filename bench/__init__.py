"""`make bench`: the gateway's cost, measured against the same upstream in one run.

`python -m bench --help` lists the options; DESIGN.md section 7 says what it reports.
"""
