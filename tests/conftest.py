"""Shared fixtures: small sessions built by hand so ingest tests do not depend on the generators."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def hand_session(n_frames: int = 6, shape=(40, 48), *, modes=None, nm_per_px: float = 0.75,
                 inv_nm_per_px: float = 0.05, fps: float = 4.0, seed: int = 0, dtype=np.float32):
    """A Session of Poisson frames with integer counts (so lossless formats round-trip exactly)."""
    from tem_operando.synth.session import Session

    rng = np.random.default_rng(seed)
    frames = rng.poisson(30.0, size=(n_frames,) + tuple(shape)).astype(dtype)
    modes = np.array(modes if modes is not None else ["image"] * n_frames)
    t = np.arange(n_frames) / fps
    dose = frames.reshape(n_frames, -1).mean(axis=1)
    ft = pd.DataFrame({"frame": np.arange(n_frames), "time_s": t, "mode": modes, "drift_x_nm": 0.0,
                       "drift_y_nm": 0.0, "n_objects": 0, "dose_e_per_px": dose})
    return Session(frames=frames, time_s=t, mode=modes,
                   nm_per_px=nm_per_px if (modes == "image").any() else float("nan"),
                   inv_nm_per_px=inv_nm_per_px if (modes == "diffraction").any() else float("nan"),
                   dose_e_per_px=dose, frame_table=ft, params={"seed": seed, "kind": "hand"})


@pytest.fixture
def tiny_session():
    return hand_session()


# -- a watchdog for hung tests ----------------------------------------------------------------------
# A test that hangs must not hold CI until its limit and leave only pytest's own frames in the last
# lines of the log: after TEM_OPERANDO_TEST_LIMIT_S seconds in one test's setup, call or teardown the
# watchdog prints every thread's stack (the main thread last), then the test's node id as the very
# last line, ends the test process's children and exits the run with status 3. A hang that holds the
# GIL (a deadlock in C code) stops Python threads too: 30 s later faulthandler, which needs no GIL,
# dumps the stacks and ends the process, and `make test` names the last test started (written to
# TEM_OPERANDO_CURRENT_TEST_FILE when that is set).
TEST_LIMIT_S = float(os.environ.get("TEM_OPERANDO_TEST_LIMIT_S", "1200"))
CURRENT_TEST_FILE = os.environ.get("TEM_OPERANDO_CURRENT_TEST_FILE")


def _dump_and_exit(item, when: str, limit_s: float) -> None:  # pragma: no cover - only on a hang
    import sys
    import threading
    import traceback

    capman = item.config.pluginmanager.getplugin("capturemanager")
    if capman is not None:  # write to the run's own stderr, not into the test's captured output
        try:
            capman.suspend_global_capture(in_=True)
        except Exception:  # noqa: BLE001
            pass
    frames = sys._current_frames()
    names = {t.ident: t.name for t in threading.enumerate()}
    main = threading.main_thread().ident
    me = threading.get_ident()
    out = sys.__stderr__
    for ident in sorted(frames, key=lambda i: i == main):
        if ident == me:
            continue
        print(f"\n--- thread {names.get(ident, ident)} (most recent call last) ---", file=out)
        print("".join(traceback.format_stack(frames[ident])[-12:]), file=out, end="")
    try:
        import psutil

        for child in psutil.Process().children(recursive=True):
            child.kill()
    except Exception:  # noqa: BLE001 - best effort; the exit below ends the run anyway
        pass
    print(f"\nHUNG TEST: {item.nodeid} ({when}) still running after {limit_s:.0f} s; stacks above", file=out, flush=True)
    os._exit(3)


def _faulthandler_fd(config) -> int:
    """The run's own stderr for faulthandler (pytest's copy, made before output capture)."""
    try:
        from _pytest.faulthandler import fault_handler_stderr_fd_key

        return config.stash[fault_handler_stderr_fd_key]
    except Exception:  # noqa: BLE001 - another pytest: the process's stderr
        import sys

        return sys.__stderr__.fileno()


@pytest.hookimpl(wrapper=True, trylast=True)
def pytest_runtest_protocol(item, nextitem):
    import faulthandler
    import threading

    if CURRENT_TEST_FILE:
        with open(CURRENT_TEST_FILE, "w") as f:
            f.write(item.nodeid + "\n")
    import time

    fd, deadline = _faulthandler_fd(item.config), time.monotonic() + TEST_LIMIT_S + 30
    faulthandler.dump_traceback_later(TEST_LIMIT_S + 30, exit=True, file=fd)
    state = {"when": "setup"}

    def _report_phase(when):
        state["when"] = when
        # armed again: pytest's faulthandler plugin cancels it whenever a phase fails
        faulthandler.dump_traceback_later(max(1.0, deadline - time.monotonic()), exit=True, file=fd)

    item._tem_phase = _report_phase
    timer = threading.Timer(TEST_LIMIT_S, lambda: _dump_and_exit(item, state["when"], TEST_LIMIT_S))
    timer.daemon = True
    timer.start()
    try:
        return (yield)
    finally:
        timer.cancel()
        faulthandler.cancel_dump_traceback_later()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_call(item):
    getattr(item, "_tem_phase", lambda w: None)("call")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_teardown(item, nextitem):
    getattr(item, "_tem_phase", lambda w: None)("teardown")
