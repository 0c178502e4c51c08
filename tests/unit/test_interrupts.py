"""The interrupt line names where the run stopped."""

import os
import signal

import pytest

from xaudit import interrupts
from xaudit.interrupts import Interrupted, entering, finished, handled, message


def test_message_names_the_stage_running_or_just_finished():
    entering("audit")
    assert message(Interrupted(signal.SIGTERM)) == (
        "interrupted by SIGTERM during the audit stage: finished stages and chunks are kept; "
        "run `xaudit run` again with the same recipe to resume")
    finished("audit")
    assert "by SIGINT after the audit stage finished:" in message(Interrupted(signal.SIGINT), "xaudit audit")
    assert message(Interrupted(signal.SIGINT), "xaudit audit").endswith("run `xaudit audit` again with the same recipe to resume")
    interrupts._STATE.update(stage=None, finished=False)
    assert message(Interrupted(signal.SIGINT)).startswith("interrupted by SIGINT: finished")


def test_handled_turns_sigterm_into_interrupted_with_exit_143_and_restores():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Interrupted) as err, handled():
        os.kill(os.getpid(), signal.SIGTERM)
    assert err.value.exit_code == 143 and not isinstance(err.value, Exception)
    assert signal.getsignal(signal.SIGTERM) is before
