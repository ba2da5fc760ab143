import os

# Tests run headless on two cores: keep torch from oversubscribing them and SDL from looking for a screen.
os.environ.setdefault("SDL_VIDEODRIVER", "offscreen")
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")

import signal  # noqa: E402

import torch  # noqa: E402

torch.set_num_threads(2)

# A test run started in the background of a script (`pytest &`) begins with Ctrl-C ignored, as shells start their
# background jobs, and one under `nohup` with SIGHUP ignored; the commands respect that (an ignored stop signal
# stays ignored), so the tests of what Ctrl-C or a closed terminal does give them back, to this process and to the
# commands it starts, as a terminal would.
for _stop, _default in ((signal.SIGINT, signal.default_int_handler), (signal.SIGTERM, signal.SIG_DFL),
                        (signal.SIGHUP, signal.SIG_DFL)):
    if signal.getsignal(_stop) is signal.SIG_IGN:
        signal.signal(_stop, _default)


class Terminal:
    """A command run in a terminal of its own (a pseudo-terminal that is its controlling terminal, as a shell's
    window gives), whose output is read as it comes (a full one would stop the command), and which can be closed
    under it: `hang_up`, as a user closing the window does (the command gets SIGHUP, then its writes fail)."""

    def __init__(self, command: list[str], **popen):
        import fcntl
        import subprocess
        import termios
        import threading
        self.master, slave = os.openpty()
        self.proc = subprocess.Popen(command, stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
                                     preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0), **popen)
        os.close(slave)
        self.output, self._open = bytearray(), True
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        import select
        while self._open:
            if select.select([self.master], [], [], 0.05)[0]:
                try:
                    data = os.read(self.master, 65536)
                except OSError:  # the command closed its side
                    return
                if not data:
                    return
                self.output += data

    def hang_up(self) -> None:
        self._open = False
        self._reader.join()
        os.close(self.master)

    @property
    def text(self) -> str:
        return self.output.decode(errors="replace")
