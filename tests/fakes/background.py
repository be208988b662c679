"""An asyncio event loop in a daemon thread, for the fake servers that tests run beside
synchronous code (subprocesses, blocking clients) and beside their own event loops."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any

Setup = Callable[[], Coroutine[Any, Any, None]]


class BackgroundLoop:
    """Starts a loop in a thread, runs ``setup`` on it, and keeps it running until ``stop``."""

    def __init__(self, name: str, setup: Setup) -> None:
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            try:
                self.loop.run_until_complete(setup())
            except BaseException as exc:  # reported to the starting thread
                failure.append(exc)
                ready.set()
                self.loop.close()
                return
            ready.set()
            try:
                self.loop.run_forever()
            finally:
                pending = asyncio.all_tasks(self.loop)
                for task in pending:
                    task.cancel()
                if pending:
                    self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                self.loop.run_until_complete(self.loop.shutdown_asyncgens())
                self.loop.close()

        self._thread = threading.Thread(target=run, name=name, daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            self._thread.join()
            raise failure[0]

    def stop(self, teardown: Setup) -> None:
        """Run ``teardown`` on the loop, then stop it and join the thread."""
        try:
            asyncio.run_coroutine_threadsafe(teardown(), self.loop).result(timeout=10)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=10)
