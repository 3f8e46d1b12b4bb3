"""DVC stage `quantize`: the same code path as `whisper-npu quantize`;
paths come from dvc.yaml."""

import sys

from pipeline.cli import main

raise SystemExit(main(["quantize", *sys.argv[1:]]))
