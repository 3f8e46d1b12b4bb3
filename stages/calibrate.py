"""DVC stage `calibrate`: the same code path as `whisper-npu calibrate`;
paths come from dvc.yaml."""

import sys

from pipeline.cli import main

raise SystemExit(main(["calibrate", *sys.argv[1:]]))
