"""Outputs: the projector window and headless sinks (see ``engine.output.factory``)."""

from dreamstate.engine.output.base import NullOutput, Output, TeeOutput
from dreamstate.engine.output.factory import FallbackOutput, open_output, preview_window
from dreamstate.engine.output.sinks import MjpegOutput, PngOutput, VideoOutput
from dreamstate.engine.output.window import NoDisplayError, WindowOutput, display_present, list_displays

__all__ = ["FallbackOutput", "MjpegOutput", "NoDisplayError", "NullOutput", "Output",
           "PngOutput", "TeeOutput", "VideoOutput", "WindowOutput", "display_present",
           "list_displays", "open_output", "preview_window"]
