"""dreamstate engine: runtime, records, channels, show files, signal, scenes, render, output."""

__version__ = "0.1.0"
