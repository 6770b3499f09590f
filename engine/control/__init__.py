"""Control in and telemetry out: OSC (TouchDesigner, Max) with one set of typed commands."""
