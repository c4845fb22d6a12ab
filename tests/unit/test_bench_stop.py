import os
import signal
import time

import pytest

from bench import kafka_run


def test_sigterm_in_the_block_interrupts_as_ctrl_c_does_and_the_old_handler_comes_back():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt):
        with kafka_run.stopped_as_interrupted():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the signal's handler raises during the sleep
    assert signal.getsignal(signal.SIGTERM) is before
