"""The game's world worker: state tokens for rewind, and errors from a child process arriving whole."""
import time

import numpy as np
import pytest

from camera.controls import InputState, MotionState
from camera.errors import InputError
from camera.pose import Pose
from explorer.world_host import Job, Tick, Worker
from world.level import load_level
from world.make import WorldOpener


class CountingWorld:
    """A world whose frames show how many steps it has taken since its reset: restoring a state rewinds it."""
    size = (8, 4)

    def reset(self, level, seed):
        self.steps = 0
        return self._frame()

    def step(self, poses):
        self.steps += 1
        return np.stack([self._frame()] * len(poses))

    def state(self):
        return self.steps

    def restore(self, state):
        self.steps = state

    def _frame(self):
        return np.full((4, 8, 3), self.steps, np.uint8)


def wait(worker: Worker):
    deadline = time.perf_counter() + 60
    while (result := worker.poll()) is None:
        assert time.perf_counter() < deadline, "no result in 60 s"
        time.sleep(0.01)
    return result


def ticks(n: int) -> list[Tick]:
    return [Tick(0.0, InputState(), MotionState.at(Pose((0.0, 1.0, 0.0)), None))] * n


def test_states_stay_with_the_worker_and_are_forgotten_unless_kept():
    worker = Worker(lambda kind, size: CountingWorld(), "reference", None, 0)
    try:
        level = load_level("meadow")
        worker.submit(Job(ticks(1), 0, 0, level.start, reset=level))
        tokens = [wait(worker).state]
        for step in range(1, 4):
            worker.submit(Job(ticks(4), step, 0, level.start, keep=tuple(tokens)))
            result = wait(worker)
            assert result.frames.shape == (4, 4, 8, 3) and result.frames[0, 0, 0, 0] == step
            tokens.append(result.state)
        assert len(set(tokens)) == 4 and all(isinstance(t, int) for t in tokens)
        # back to the state after step 1: the next step is step 2 again
        worker.submit(Job(ticks(4), 4, 1, level.start, restore=tokens[1], keep=tuple(tokens)))
        assert wait(worker).frames[0, 0, 0, 0] == 2
        # a token the game did not keep is gone: asking for it is an error, raised by poll
        worker.submit(Job(ticks(4), 5, 1, level.start, keep=(tokens[2],)))
        wait(worker)
        worker.submit(Job(ticks(4), 6, 2, level.start, restore=tokens[1], keep=(tokens[2],)))
        with pytest.raises(KeyError):
            wait(worker)
    finally:
        worker.close()


def test_a_world_that_cannot_be_opened_in_the_child_process_raises_its_input_error(tmp_path):
    missing = tmp_path / "missing.safetensors"
    with pytest.raises(InputError) as raised:
        Worker(WorldOpener(checkpoint=str(missing), device="cpu"), "generated", None, 0, process=True)
    assert str(missing) in str(raised.value)  # the same one-line error as on the main thread


def test_closing_mid_step_ends_the_child_process_by_itself():
    # A result bigger than the pipe's buffer (4 frames of 256x144) still on its way when the game quits: the child
    # can only end once it is read. Unread, the child hung until it was killed after CLOSE_SECONDS (exit code -9).
    level = load_level("meadow")
    worker = Worker(WorldOpener(device="cpu", level=level), "reference", (256, 144), 0, process=True)
    worker.submit(Job(ticks(1), 0, 0, level.start, reset=level))
    wait(worker)
    worker.submit(Job(ticks(4), 1, 0, level.start))
    worker.close()
    assert worker._runner.exitcode == 0


def test_a_split_view_step_time_covers_both_worlds():
    # The HUD's step time is what play waits on: in split view, the comparison world's step too.
    class SlowWorld(CountingWorld):
        def step(self, poses):
            time.sleep(0.05)
            return super().step(poses)

    worker = Worker(lambda kind, size: SlowWorld(), "reference", None, 0)
    try:
        level = load_level("meadow")
        worker.submit(Job(ticks(1), 0, 0, level.start, reset=level, split=True))
        wait(worker)
        worker.submit(Job(ticks(4), 1, 0, level.start, split=True))
        result = wait(worker)
        assert result.side is not None and result.step_ms >= 100  # two 50 ms steps
    finally:
        worker.close()


STOPPED_CHILD = '''
import os, signal
import numpy as np
if os.getpid() != int(os.environ["EXPLORER_TEST_PARENT_PID"]):  # in the world's process, while it imports
    os.kill(os.getpid(), signal.SIGINT)
    os.kill(os.getpid(), signal.SIGTERM)

class StillWorld:
    size = (8, 4)
    def reset(self, level, seed):
        return np.zeros((4, 8, 3), np.uint8)

def open_still(kind, size):
    return StillWorld()
'''


def test_a_ctrl_c_while_the_world_process_starts_is_left_to_the_game(tmp_path, monkeypatch):
    # A terminal's Ctrl-C (or `timeout`'s SIGTERM) reaches the whole process group. One that came while the world's
    # process was still importing killed it, and the game ended with two tracebacks and exit code 1.
    import importlib
    import os
    import sys
    (tmp_path / "stopped_child.py").write_text(STOPPED_CHILD)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("EXPLORER_TEST_PARENT_PID", str(os.getpid()))
    module = importlib.import_module("stopped_child")
    try:
        worker = Worker(module.open_still, "reference", None, 0, process=True)
        assert worker.size == (8, 4)
        worker.close()
        assert worker._runner.exitcode == 0
    finally:
        sys.modules.pop("stopped_child", None)
