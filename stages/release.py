"""DVC stage `release`: the same code path as `whisper-npu release`;
paths come from dvc.yaml."""

import sys

from pipeline.cli import main

raise SystemExit(main(["release", *sys.argv[1:]]))
