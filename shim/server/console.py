"""``terminal=true``: copy between a workload's pty master and containerd's FIFOs.

The Linux workload makes the pty inside the container and sends the master over the control
channel with its ``ready`` (``runwasm.linux.terminal``). The server then owns the master: it
copies master -> stdout FIFO and stdin FIFO -> master from the event loop, applies ResizePty
with TIOCSWINSZ, and closes everything when the slave side hangs up (EIO) or the task goes.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import struct
import termios

from runwasm.shim.server.stdio import StdioPaths, _open_in, _open_out

log = logging.getLogger(__name__)


class Console:
    def __init__(self, master: int, stdio: StdioPaths) -> None:
        """Takes ownership of ``master``: if the FIFOs cannot be opened it is closed too."""
        self.master = master
        self._loop = asyncio.get_running_loop()
        self._out = self._in = -1
        try:
            self._out = _open_out(stdio.stdout, "stdout") if stdio.stdout else -1
            self._in = _open_in(stdio.stdin) if stdio.stdin else -1
        except BaseException:
            for fd in (self._out, master):
                if fd >= 0:
                    os.close(fd)
            raise
        os.set_blocking(master, False)
        self._loop.add_reader(master, self._pump_out)
        if self._in >= 0:
            os.set_blocking(self._in, False)
            self._loop.add_reader(self._in, self._pump_in)
        self.closed = False

    def _pump_out(self) -> None:
        try:
            data = os.read(self.master, 65536)
        except BlockingIOError:
            return
        except OSError:  # EIO: every slave fd is closed, the process is gone
            data = b""
        if not data:
            self.close()
            return
        if self._out >= 0:
            try:
                os.write(self._out, data)
            except OSError as err:
                log.warning("console output dropped: %s", err)

    def _pump_in(self) -> None:
        try:
            data = os.read(self._in, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:  # containerd closed stdin (CloseIO): stop forwarding; the pty stays
            self._loop.remove_reader(self._in)
            os.close(self._in)
            self._in = -1
            return
        try:
            os.write(self.master, data)
        except OSError as err:
            log.warning("console input dropped: %s", err)

    def resize(self, width: int, height: int) -> None:
        """Set the window size. After close() (the process hung up) it does nothing, as runc's
        shim: ctr sends ResizePty right after Start, racing a short-lived process, and the
        master's fd number may already belong to another file."""
        if self.closed:
            log.debug("console resize to %dx%d ignored: the pty is closed", width, height)
            return
        fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._loop.remove_reader(self.master)
        if self._in >= 0:
            self._loop.remove_reader(self._in)
            os.close(self._in)
        if self._out >= 0:
            os.close(self._out)
        os.close(self.master)
