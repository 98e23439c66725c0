"""How long a test waits for a subprocess, a server or a prompt before it calls it hung: one number for all.

A guard is there to catch a hang, never to time the code. CI may share its machine with other work, and on
2 cores at load average 5-10 the same job takes 5-30x longer than on a quiet machine (a tiny `make demo` that
ran in ~40 s quiet hit a 300 s guard; a server's Ctrl-C stop that takes seconds hit a 60 s one). So every
guard is the same generous bound, four times the slowest wait measured under such load (a whole parity run,
~15 min at load ~8), and a hang still ends the test, once.
`VIST3A_HANG_S` changes it (e.g. longer on an emulated CPU).
"""

from __future__ import annotations

import os

HANG_S = float(os.environ.get("VIST3A_HANG_S") or 3600)
