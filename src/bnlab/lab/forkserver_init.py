"""Preloaded by the lab's fork server (``set_forkserver_preload``), never imported elsewhere.

First ties the fork server's life to the main process that started it
(`bnlab.lab.lifeline.die_with_parent`), then imports what every run needs (torch,
the models, the data registry, the stacked trainer) once, so each worker forked from
the server starts with it already loaded.
"""

from bnlab.lab.lifeline import die_with_parent

die_with_parent(watchdog=False)

import bnlab.lab.runs  # noqa: E402  (the preload itself)
import bnlab.lab.vectorized  # noqa: E402
import bnlab.train.vectorized  # noqa: E402, F401
