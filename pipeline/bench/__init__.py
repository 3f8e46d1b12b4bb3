"""Measuring artifacts: WER, latency, the bench run, its plots and the regression gate."""
