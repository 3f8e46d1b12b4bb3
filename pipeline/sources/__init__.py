"""Where the inputs come from: the Whisper checkpoint and the speech sets."""
