"""DVC stage `bench`: the same code path as `whisper-npu bench`; paths come from dvc.yaml."""

import sys

from pipeline.cli import run

# Guarded: worker processes (spawn) import this module again under another name.
if __name__ == "__main__":
    run(["bench", *sys.argv[1:]])
