"""The PyTorch side: float reference transcripts, the static-shape export and its parity gate."""
