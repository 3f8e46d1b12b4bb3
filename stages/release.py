"""DVC stage `release`: the same code path as `whisper-npu release`;
paths come from dvc.yaml."""

import sys

from pipeline.cli import run

# Guarded: worker processes (spawn) import this module again under another name.
if __name__ == "__main__":
    run(["release", *sys.argv[1:]])
