"""The audit trail's writing side, shared by the gateway and the supervisor: the one shape of a
line (`lines.py`), the file appended under a `flock` and rotated by size (`files.py`), and the
bounded queue with its one writer task (`writer.py`). Reading it back is `orchestra audit`'s
(gateway/audit/read.py)."""
