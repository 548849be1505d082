"""SIGTERM inside a trainer: raised where the trainer can record why it stops, once, then the old handler again."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from storyloop.generation.training import Terminated, hold_sigterm, sigterm_raises


def test_sigterm_raises_once_and_the_previous_handler_comes_back():
    seen = []
    previous = signal.signal(signal.SIGTERM, lambda *_: seen.append("outer"))
    try:
        with pytest.raises(Terminated, match="SIGTERM"), sigterm_raises():
            try:
                os.kill(os.getpid(), signal.SIGTERM)  # the handler runs before the next bytecode
            except Terminated:
                os.kill(os.getpid(), signal.SIGTERM)  # a second one while recording: ignored, nothing raised
                raise
        assert seen == []
        os.kill(os.getpid(), signal.SIGTERM)  # outside: the handler from before
        assert seen == ["outer"]
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_hold_sigterm_ignores_it_until_the_block_ends():
    previous = signal.getsignal(signal.SIGTERM)
    with sigterm_raises():
        hold_sigterm()
        os.kill(os.getpid(), signal.SIGTERM)  # would raise Terminated without the hold
    assert signal.getsignal(signal.SIGTERM) is previous


def test_off_the_main_thread_it_changes_nothing():
    before, inside = signal.getsignal(signal.SIGTERM), []

    def run():
        with sigterm_raises():
            hold_sigterm()
            inside.append(signal.getsignal(signal.SIGTERM))

    t = threading.Thread(target=run)
    t.start()
    t.join()
    assert inside == [before] and signal.getsignal(signal.SIGTERM) is before


def test_outside_a_block_hold_changes_nothing():
    """A trainer's internals run without the block in tests and scripts: an ignored SIGTERM left behind was
    inherited by every pool worker started later, which then could not be terminated (a hung suite)."""
    before = signal.getsignal(signal.SIGTERM)
    hold_sigterm()
    assert signal.getsignal(signal.SIGTERM) is before
