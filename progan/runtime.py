"""Process-wide settings for long jobs: the memory allocator.

OpenMP's waiting policy is left to the user (`OMP_WAIT_POLICY`, read once when torch loads): no setting is faster
both alone on a machine and beside another busy process (docs/speed.md).
"""

from __future__ import annotations

import ctypes
import ctypes.util

# mallopt(3) parameters
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_MAX = 32 * 2**20  # glibc's ceiling on 64-bit; mallopt refuses anything larger
TRIM_THRESHOLD = 2**31 - 1        # mallopt takes an int


def keep_freed_memory() -> bool:
    """Let glibc keep the memory a training step frees, so that the next step does not fault it back in.

    A step allocates and frees the same few hundred MB of activations and gradients over and over. With glibc's
    defaults, blocks above an adaptive threshold are mmap'ed and unmapped every time and the top of the heap is
    trimmed whenever enough of it is free, so the kernel hands the pages back zero-filled on the next touch: about
    10,000 minor page faults per paper-preset step at 4x4 and 8x8, 13,000 per demo-preset step at 16x16 and 32x32
    (docs/speed.md). With these two thresholds the heap keeps what it had at its peak, which the next step
    needs again anyway: the peak RSS is unchanged. Blocks over 32 MB are still mmap'ed (glibc's ceiling).

    Returns whether the settings took; False without glibc (macOS, musl), where nothing changes.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
