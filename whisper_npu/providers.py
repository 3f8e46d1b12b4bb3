"""ONNX Runtime's names for the execution providers this project runs on."""

CPU_PROVIDER = "CPUExecutionProvider"  # everything runs here without the NPU, and falls back here
VITISAI_PROVIDER = "VitisAIExecutionProvider"  # AMD's NPU, from the Ryzen AI installer only
