"""The one interface every control transport implements (OSC now, MQTT now, more later).

Lifecycle, and what is true after each call:

* after ``__init__``: nothing is open; ``commands`` is an empty bounded queue of typed
  :data:`~engine.control.commands.Command` values and ``counters`` is empty.
* ``await start()``: the transport's resources are acquired (the OSC socket is bound; the MQTT
  credentials and certificates are read), or a ``NetworkError`` says which address or file
  failed and how to fix it. Must return within a few seconds.
* ``await run()``: serves until cancelled. Valid messages appear in ``commands`` (the oldest
  dropped and counted when the show falls behind); bad ones are counted by reason and logged
  with the fix; a lost connection is retried with the shared ``Backoff``. Never returns
  normally.
* ``close()``: everything is released. Idempotent.

The runtime wires a transport the same way whatever it is: start, run beside a loop that
applies ``await commands.get()``, close (``engine.runtime.app``).
"""

from __future__ import annotations

import abc

from dreamstate.engine.control.commands import Command
from dreamstate.engine.core.channels import BoundedQueue
from dreamstate.engine.core.metrics import Counters


class ControlTransport(abc.ABC):
    """A source of typed control commands (see the module docstring for the lifecycle)."""

    name: str = "control"
    commands: BoundedQueue[Command]
    counters: Counters

    async def start(self) -> None:  # noqa: B027 -- optional: not every transport acquires anything
        """Acquire resources; raises ``NetworkError`` with the address and the fix."""

    @abc.abstractmethod
    async def run(self) -> None:
        """Serve until cancelled."""

    def close(self) -> None:  # noqa: B027 -- optional: not every transport holds anything
        """Release resources. Idempotent."""
