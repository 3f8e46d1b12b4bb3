"""DVC stage `model`: the same code path as `whisper-npu model`;
paths come from dvc.yaml."""

import sys

from pipeline.cli import main

raise SystemExit(main(["model", *sys.argv[1:]]))
