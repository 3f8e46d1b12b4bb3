"""DVC stage `data`: the same code path as `whisper-npu data`;
paths come from dvc.yaml."""

import sys

from pipeline.cli import main

raise SystemExit(main(["data", *sys.argv[1:]]))
