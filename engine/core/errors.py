"""A small exception hierarchy. Every message carries its context (port, address, key path)."""

from __future__ import annotations


class DreamstateError(Exception):
    """Base of every error dreamstate raises on purpose.

    ``hint`` says how to fix it; it is appended to the message so a technician reading a log
    line sees the cause and the fix together.
    """

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.hint = hint
        super().__init__(f"{message} (fix: {hint})" if hint else message)


class ShowError(DreamstateError):
    """A show file is invalid. ``problems`` lists every (key path, message) found."""

    def __init__(self, path: str, problems: list[tuple[str, str]]) -> None:
        self.path = path
        self.problems = problems
        lines = "\n".join(f"  {key}: {msg}" for key, msg in problems)
        super().__init__(f"show {path} has {len(problems)} error(s):\n{lines}")


class PathEscapeError(DreamstateError):
    """A path from a show file or from OSC points outside the show's folder."""


class DeviceError(DreamstateError):
    """A headset, serial port, simulator or replay source failed (message names the port)."""


class ProtocolError(DeviceError):
    """Bytes that cannot be ThinkGear. The parser counts these; it never raises them to a reader."""


class RecordingError(DreamstateError):
    """A recording or journal could not be written or read (message names the file)."""


class SignalError(DreamstateError):
    """Windowing, features, map or state failed (message names the stage)."""


class CalibrationError(SignalError):
    """A calibration cannot be fitted (too few windows per label, one label only, ...)."""


class ModelError(DreamstateError):
    """A model is missing, corrupt, or uses an op the dream compiler does not support."""


class RenderError(DreamstateError):
    """The dream worker or an output failed (message names the output)."""


class NetworkError(DreamstateError):
    """OSC, MQTT or a download failed (message names the address)."""
