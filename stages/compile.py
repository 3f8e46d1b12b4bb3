"""DVC stage `compile`: the same code path as `whisper-npu compile`;
paths come from dvc.yaml."""

import sys

from pipeline.cli import main

raise SystemExit(main(["compile", *sys.argv[1:]]))
