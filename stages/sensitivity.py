"""DVC stage `sensitivity`: the same code path as `whisper-npu sensitivity`;
paths come from dvc.yaml."""

import sys

from pipeline.cli import main

raise SystemExit(main(["sensitivity", *sys.argv[1:]]))
