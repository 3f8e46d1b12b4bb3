"""Calibration, per-layer sensitivity, the quantizer backends and the quantize stage."""
