"""The interval flusher of ``sync="interval"``: a daemon thread that, every
``sync_interval`` seconds, writes buffered appends, runs one group barrier when anything
written is not durable yet, and seals a segment that has grown older than
``max_segment_age`` on a quiet log.
"""

from __future__ import annotations

import threading

from segwal.log.appender import Appender
from segwal.log.state import LogState


class IntervalFlusher:
    """The background thread of one ``sync="interval"`` log; ``stop()`` joins it."""

    def __init__(self, state: LogState, appender: Appender) -> None:
        self._state = state
        self._appender = appender
        self._stop = threading.Event()
        # A daemon: an unclosed log never keeps the interpreter from exiting.
        self._thread = threading.Thread(target=self._run, name="segwal-flusher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        state, appender = self._state, self._appender
        config = state.config
        while not self._stop.wait(config.sync_interval):
            try:
                if state.buffer.payloads:
                    with state.lock:
                        if not state.closed and state.failure is None:
                            if appender.pipeline is not None:
                                # Queued, not awaited: the workers write it soon, and the
                                # barrier below covers what they wrote by then.
                                appender.pipeline.submit_burst()
                            else:
                                appender.flush_buffer()
                state.commit.flush()
                if config.max_segment_age is not None:
                    with state.lock:
                        writer = state.writer
                        if (
                            writer is not None
                            and not state.closed
                            and state.failure is None
                            and appender.rotation.aged(writer, config.now_us())
                        ):
                            appender.rotate_locked("age")
            except Exception:  # the failure is recorded; appenders see WalFailedError
                return
