"""The bundled starter dream model: data generator, training script and the ONNX file."""
