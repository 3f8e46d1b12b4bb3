"""DVC stage entry points, one module per stage: each declares its arguments (the paths come
from dvc.yaml), reads its own params section and makes one `pipeline` call. `whisper-npu`
offers the same commands."""
