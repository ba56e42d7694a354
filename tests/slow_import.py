"""A module whose import takes 30 s, in short sleeps: a soft time limit strikes inside it, as
it can inside ``import datasets`` on a loaded machine (tests/test_worker_child.py)."""

import time

for _ in range(300):
    time.sleep(0.1)
