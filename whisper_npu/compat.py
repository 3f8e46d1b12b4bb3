"""What the runtime takes from Python 3.11+, on 3.10 too: the Python of Ryzen AI 1.3-1.5."""

from __future__ import annotations

import sys
from enum import Enum

if sys.version_info >= (3, 11):
    from enum import StrEnum
else:

    class StrEnum(str, Enum):
        """enum.StrEnum's behaviour that the runtime relies on: str() and f-strings give the
        value."""

        def __str__(self) -> str:
            return str(self.value)

        def __format__(self, spec: str) -> str:
            return format(str(self.value), spec)


__all__ = ["StrEnum"]
