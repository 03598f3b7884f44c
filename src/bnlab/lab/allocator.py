"""Worker processes keep the memory they free instead of faulting it in again every step.

PyTorch takes every CPU tensor from ``malloc``. glibc's defaults suit a program that
allocates once: a block above the mmap threshold (128 KiB at first, raised as such
blocks are freed) is mapped afresh and unmapped when freed, and free memory at the top
of the heap goes back to the OS once it exceeds the trim threshold. A training loop
allocates and frees the same few blocks of 0.1-1 MiB hundreds of times a second, so
each of them can come back as new, zeroed pages: one page fault per 4 KiB. A stack of
30 circles replicas (100 epochs) took 52,000-312,000 faults in eight runs (the imports
alone 42,000; how many depends on what glibc has seen freed before); with the
thresholds below, none beyond the imports in every run, and its time on one core went
from a median of 4.1 s to 3.4 s in eight alternated pairs.

:func:`keep_freed_memory` raises both thresholds with ``mallopt``: blocks up to
:data:`MMAP_THRESHOLD` come from the heap, and up to :data:`TRIM_THRESHOLD` of free heap
stays with the process, which may then hold that much more memory than it uses. The lab
calls it in its own worker processes only; a process that imports bnlab keeps its
allocator as it is.
"""

from __future__ import annotations

import ctypes
import sys

#: ``mallopt`` parameters (glibc's malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: Blocks below this size come from the heap (32 MiB: glibc's largest on 64-bit).
MMAP_THRESHOLD = 32 * 2**20
#: Free memory at the top of the heap kept by the process.
TRIM_THRESHOLD = 128 * 2**20


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds in this process (see the module docstring).

    Returns whether they were set: False where the C library is not glibc (macOS,
    Windows, musl), which keep their own allocators' behaviour.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
