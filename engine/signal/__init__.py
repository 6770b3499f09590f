"""EEG signal area: ring buffer, causal filters, windows, features, 2D map, states, calibration.

Importing this package is cheap (no numpy): it only registers the signal show check in
``engine.show.EXTRA_CHECKS``. The pipeline lives in ``engine.signal.pipeline``.
"""

from engine.signal.check import register as _register_check

_register_check()
