"""DVC stage `reference`: the same code path as `whisper-npu reference`;
paths come from dvc.yaml."""

import sys

from pipeline.cli import run

# Guarded: worker processes (spawn) import this module again under another name.
if __name__ == "__main__":
    run(["reference", *sys.argv[1:]])
