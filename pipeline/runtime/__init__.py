"""What a deployment needs to run a bundle: ONNX Runtime, audio, features, decoding."""
