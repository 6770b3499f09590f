"""The bundled toon style model: a hand-built image-to-image ONNX graph (no learned weights)."""
