"""whisper-npu: Whisper → static-shape ONNX → Vitis AI quantization → Ryzen AI NPU, with proof."""
