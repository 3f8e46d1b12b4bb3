"""DVC stage `bench`: the same code path as `whisper-npu bench`; paths come from dvc.yaml."""

import sys

from pipeline.cli import main

raise SystemExit(main(["bench", *sys.argv[1:]]))
