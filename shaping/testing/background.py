"""A server that runs on an event loop of its own, in a daemon thread, until stopped."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import Any


class BackgroundServer:
    """Subclasses define `listen()`: start serving, set `self.port`, return the clean-up."""

    port = 0
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None

    async def listen(self) -> Callable[[], Awaitable[None]]:
        raise NotImplementedError

    def __enter__(self) -> Any:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def start(self) -> None:
        ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(ready,), daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError(f"{type(self).__name__} did not start")

    def wait_until_interrupted(self) -> None:
        """Serve (started) until Ctrl-C, then stop: the end of a server's `main`."""
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            self.stop()

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(10)

    def _serve(self, ready: threading.Event) -> None:
        self._loop = asyncio.new_event_loop()
        self._loop.run_until_complete(self._main(ready))

    async def _main(self, ready: threading.Event) -> None:
        self._stop = asyncio.Event()
        clean_up = await self.listen()
        ready.set()
        await self._stop.wait()
        await clean_up()
