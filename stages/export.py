"""DVC stage `export`: the same code path as `whisper-npu export`;
paths come from dvc.yaml."""

import sys

from pipeline.cli import main

raise SystemExit(main(["export", *sys.argv[1:]]))
