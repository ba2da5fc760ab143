import os

# Tests run headless on two cores: keep torch from oversubscribing them and SDL from looking for a screen.
os.environ.setdefault("SDL_VIDEODRIVER", "offscreen")
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")

import torch  # noqa: E402

torch.set_num_threads(2)


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
