"""DVC stage `reference`: the same code path as `whisper-npu reference`;
paths come from dvc.yaml."""

import sys

from pipeline.cli import main

raise SystemExit(main(["reference", *sys.argv[1:]]))
