"""A step's output into its log: bounded lines, cheap stamps, a size cap.

- Lines are cut at LINE_MAX bytes whether or not the output has newlines, so the
  bytes held for an unfinished line are bounded and each byte is copied a fixed
  number of times: memory per step is bounded and time linear in the output.
- The first line of a second is stamped in full (`stamp()`); a later line of the same
  second starts with one space instead. A log of 2-byte lines (`yes`) is then 1.5
  times its output, not 14 times; a line that starts with a stamp is always
  pushgate's (a step's own text is behind the stamp or the space).
- Over `max_bytes`, the head is kept on disk as it comes and the tail in memory (at
  most TAIL_MAX bytes); when the step ends, a `[pushgate]` line says how much was
  dropped between them, and the tail follows it.
"""

from __future__ import annotations

import os
import time
from collections import deque

from pushgate.run.executors.base import LOG_MAX_BYTES, stamp

LINE_MAX = 64 * 1024
TAIL_MAX = 1024 * 1024
# Room under the cap for pushgate's own lines (run, marker, killed, exit status).
_RESERVE = 4096


class StepLog:
    def __init__(self, fd: int, max_bytes: int = LOG_MAX_BYTES) -> None:
        self.fd = fd
        self.max_bytes = max_bytes
        # The unfinished line, in pieces (joined once it ends or reaches LINE_MAX).
        self.parts: list[bytes] = []
        self.plen = 0
        # The second of the last full stamp.
        self.sec = -1
        self.tail_max = min(max_bytes // 4, TAIL_MAX)
        self.head_left = max(max_bytes - self.tail_max - _RESERVE, 0)
        # Over the cap: the last blocks (stamped bytes, output bytes, lines).
        self.tail: deque[tuple[bytes, int, int]] | None = None
        self.tail_len = 0
        self.dropped = 0
        self.dropped_lines = 0
        # Why the log could not be written (the first error); output is still consumed.
        self.write_error: OSError | None = None

    def feed(self, data: bytes) -> None:
        """Output as it comes: every complete line goes to the log now."""
        end = data.rfind(b"\n")
        if end < 0:
            self.parts.append(data)
            self.plen += len(data)
            if self.plen >= LINE_MAX:
                self._cut(False)
            return
        if self.parts:
            first = data.find(b"\n")
            if self.plen + first > LINE_MAX:
                # The unfinished line ends here too long: in pieces, then the rest.
                self.parts.append(data[:first])
                self._cut(True)
                text = data[first + 1 : end + 1]
            else:
                self.parts.append(data[: end + 1])
                text = b"".join(self.parts)
                self.parts = []
            self.plen = 0
        else:
            text = data if end + 1 == len(data) else data[: end + 1]
        if end + 1 < len(data):
            rest = data[end + 1 :]
            self.parts = [rest]
            self.plen = len(rest)
            if self.plen >= LINE_MAX:
                self._cut(False)
        if text:
            self._emit(text)

    def _cut(self, ended: bool) -> None:
        """The unfinished line as lines of LINE_MAX bytes; its end too if `ended`."""
        buf = b"".join(self.parts)
        whole = len(buf) if ended else len(buf) - len(buf) % LINE_MAX
        pieces = [buf[k : k + LINE_MAX] for k in range(0, whole, LINE_MAX)]
        rest = buf[whole:]
        self.parts = [rest] if rest else []
        self.plen = len(rest)
        if pieces:
            self._emit(b"\n".join(pieces) + b"\n")

    def _emit(self, text: bytes) -> None:
        """Complete lines (text ends with a newline), stamped, to the head or the tail."""
        t = time.time()
        sec = int(t)
        body = text[:-1].replace(b"\n", b"\n ") + b"\n"
        if self.tail is None:
            if sec != self.sec:
                first = (stamp(t) + " ").encode()
                self.sec = sec
            else:
                first = b" "
            n = len(first) + len(body)
            if n <= self.head_left:
                self.head_left -= n
                self._write([first, body])
                return
            self.tail = deque()
        # Each block of the tail stamped: its start may be all that is kept of it.
        block = (stamp(t) + " ").encode() + body
        lines = text.count(b"\n")
        self.tail.append((block, len(text), lines))
        self.tail_len += len(block)
        while self.tail_len > self.tail_max and len(self.tail) > 1:
            old, out, n_lines = self.tail.popleft()
            self.tail_len -= len(old)
            self.dropped += out
            self.dropped_lines += n_lines

    def _write(self, chunks: list[bytes]) -> None:
        if self.write_error is None:
            try:
                os.writev(self.fd, chunks)
            except OSError as e:
                # The logs disk is full (or the log is otherwise unwritable): the output
                # is still read, so the step is not held up, and the error is the step's.
                self.write_error = e

    def finish(self) -> None:
        """The output ended: its unfinished line, then (over the cap) the marker and tail."""
        if self.parts:
            text = b"".join(self.parts) + b"\n"
            self.parts = []
            self.plen = 0
            self._emit(text)
        if self.tail is not None:
            kept = sum(out for _, out, _ in self.tail)
            marker = self._line(
                f"log over runner.log_max_bytes ({self.max_bytes}): {self.dropped} bytes "
                f"({self.dropped_lines} lines) of output dropped here; its last {kept} "
                "bytes follow"
            )
            self._write([marker, b"".join(block for block, _, _ in self.tail)])
            self.tail = None
            self.sec = -1

    def _line(self, msg: str) -> bytes:
        t = time.time()
        self.sec = int(t)
        return f"{stamp(t)} [pushgate] {msg}\n".encode()

    def note(self, msg: str) -> None:
        """One line of pushgate's own, always stamped in full (OSError if it cannot)."""
        os.write(self.fd, self._line(msg))
