"""A valid alternate signal stack for the calling thread, after OpenVINO's CPU plugin leaves it a freed one.

OpenVINO's CPU plugin (2026.4) installs alternate signal stacks and puts back the one it found when it is done,
out of order when two compiled models are released in the order they were made (seen with strace: the thread's
stack set to memory just unmapped). Python runs its signal handlers on the alternate stack, so the next Ctrl-C or
SIGTERM then kills the process with SIGSEGV instead of interrupting it. `give_valid_stack()` points the thread
at a stack of cvpipe's own, kept for the life of the process. Linux only (elsewhere it does nothing); written
by hand, through ctypes, as no library wraps sigaltstack.
"""

from __future__ import annotations

import ctypes
import sys


class _Stack(ctypes.Structure):
    _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]


_MEMORY = ctypes.create_string_buffer(1 << 16)  # glibc's SIGSTKSZ with AVX-512 state is 11.3 kB


def give_valid_stack() -> None:
    if not sys.platform.startswith("linux"):
        return
    stack = _Stack(ctypes.cast(_MEMORY, ctypes.c_void_p), 0, len(_MEMORY))
    ctypes.CDLL(None).sigaltstack(ctypes.byref(stack), None)
