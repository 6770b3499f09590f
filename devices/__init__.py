"""Headset front ends: ThinkGear over serial, a simulated headset, and replayed recordings.

Every backend implements ``devices.base.Device`` and emits ``engine.core.records.Reading`` values.
"""

if __name__ != "dreamstate.devices":  # pragma: no cover - a packaging or sys.path slip
    raise ImportError(f"import dreamstate.devices, not {__name__!r}: the devices/ folder installs inside the "
                      "dreamstate package (run from a checkout after `pip install -e .`)")
