"""Notebooks under nbval: progress bars refresh at most every PROGRESS_INTERVAL_S seconds.

nbval reads a cell's output messages (the kernel's IOPub channel) only after the cell has finished.
ZeroMQ holds a bounded number of unread messages (its high-water mark, 1000 per socket by default, plus
what fits in the TCP buffers) and drops the rest, the kernel's final "idle" status among them; nbval then
waits 5 s for that status and fails the cell with "Timeout of 5 seconds exceeded waiting for output",
although the cell ran to its end. A tqdm bar in a notebook is a widget that sends 3 messages per refresh,
10 refreshes a second by default (about 30 messages a second, measured with jupyter_client), so a cell
that trains for ten minutes (notebook 07's live run, notebook 08's backcopy runs) overflows the queue.

tqdm reads ``TQDM_<argument>`` environment variables as defaults, and nbval starts the kernel with this
process's environment: with TQDM_MININTERVAL set here, the bars a learner sees in Jupyter are unchanged
and the bars under pytest send at most 3 messages every PROGRESS_INTERVAL_S seconds. A value set
outside wins.
"""

import os

PROGRESS_INTERVAL_S = 10


def pytest_configure(config):
    os.environ.setdefault("TQDM_MININTERVAL", str(PROGRESS_INTERVAL_S))
