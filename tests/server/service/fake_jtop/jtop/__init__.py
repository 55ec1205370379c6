"""A stand-in for jetson-stats' `jtop` client (no Jetson here): replays one recorded structure.

FAKE_JTOP_FIXTURE names a tests/server/service/data/jtop-*.json file; `ok()` waits one interval like
the real client waiting for the service's next sample (its own pacing, not a test's synchronisation).
FAKE_JTOP_FAIL=1 makes `start()` raise what 4.x raises when jtop.service is down.
"""
import json
import os
import threading

__version__ = "fake"


class JtopException(Exception):
    pass


class jtop:  # noqa: N801 - the real class's name
    def __init__(self, interval=1.0):
        self.interval = interval
        with open(os.environ["FAKE_JTOP_FIXTURE"]) as f:
            self._data = json.load(f)
        self._closed = threading.Event()

    def start(self):
        if os.environ.get("FAKE_JTOP_FAIL"):
            raise JtopException("The jtop.service is not active. Please run:\nsudo systemctl restart jtop.service")

    def close(self):
        self._closed.set()

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.close()

    def ok(self):
        self._closed.wait(self.interval)
        return not self._closed.is_set()

    @property
    def stats(self):
        return dict(self._data["stats"])

    @property
    def memory(self):
        return self._data["memory"]

    @property
    def power(self):
        return self._data["power"]
