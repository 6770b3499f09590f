"""dreamstate: a NeuroSky EEG headset steers DeepDream visuals on a projector.

The installed package holds the repository's three source folders, in layers that only point
down (``docs/ARCHITECTURE.md``; enforced by import-linter contracts in ``pyproject.toml``):

* ``dreamstate.engine.core``: records, errors, metrics, channels, logs, paths, backoff and the
  show schema; imports nothing else of dreamstate;
* ``dreamstate.devices`` (headset front ends) and ``dreamstate.models`` (dream models and the
  dream-step compiler): import only the core;
* the stages ``dreamstate.engine.signal``, ``scenes``, ``render``, ``output`` and ``control``;
* ``dreamstate.engine.runtime``: the show runtime that wires the stages together;
* ``dreamstate.engine.tools``: the ``dreamstate`` command, the monitor, benchmarks, training and
  export.
"""

__version__ = "0.1.0"
