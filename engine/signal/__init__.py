"""EEG signal area: ring buffer, causal filters, windows, features, 2D map, states, calibration.

The pipeline lives in ``engine.signal.pipeline``; ``engine.signal.check`` holds the show-file
check that ``engine.runtime.showfile`` calls. Importing this package is cheap (no numpy).
"""
