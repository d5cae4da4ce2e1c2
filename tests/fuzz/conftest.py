"""Hypothesis profiles for the fuzz suite (``tests/fuzz``, marker ``fuzz``).

``RUNWASM_FUZZ`` picks the profile:

* unset or ``ci`` (the normal suite): few examples per property, derandomised (the same inputs
  every run, so a failure reproduces), no example database, no deadline (the box is shared);
* ``long``: thousands of random examples per property, failures saved in ``.hypothesis/`` and
  replayed first next time, e.g. ``RUNWASM_FUZZ=long .venv/bin/pytest -m fuzz -p no:cacheprovider``;
* ``RUNWASM_FUZZ=<number>``: the ``long`` profile with that many examples per property.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

_SLOW_OK = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]

settings.register_profile("ci", max_examples=20, deadline=None, derandomize=True, database=None,
                          suppress_health_check=_SLOW_OK, print_blob=True)
settings.register_profile("long", max_examples=2000, deadline=None, suppress_health_check=_SLOW_OK,
                          print_blob=True)

_choice = os.environ.get("RUNWASM_FUZZ", "ci") or "ci"
if _choice.isdigit():
    settings.register_profile("custom", parent=settings.get_profile("long"), max_examples=int(_choice))
    _choice = "custom"
settings.load_profile(_choice)


def open_fds() -> set[int]:
    """This process's open file descriptors (leak checks compare before and after)."""
    return {int(n) for n in os.listdir("/proc/self/fd")}
