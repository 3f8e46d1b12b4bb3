"""The Hugging Face hub, reached once before anything is downloaded: offline, a missing repo or
a refused one is one line at once, not minutes of retries printed as library reprs (the hub
client retries each file 5 times, ~25 s, logging every attempt)."""

from __future__ import annotations

from typing import Any, Literal

from whisper_npu.errors import UserError

OFFLINE_HINT = "set HF_HUB_OFFLINE=1 to use a copy in the local cache"


def hub_offline() -> bool:
    """The user said so (HF_HUB_OFFLINE): the libraries then read their cache alone."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def repo_info(repo_id: str, revision: str, kind: Literal["model", "dataset"]) -> Any:
    """The repo's metadata (one request, 15 s at most), or one line saying why not."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled, RepositoryNotFoundError

    try:
        return HfApi().repo_info(repo_id, revision=revision, repo_type=kind, timeout=15)
    except RepositoryNotFoundError:
        raise UserError(f"hub {kind} {repo_id!r} not found (or private)") from None
    except (OfflineModeIsEnabled, HfHubHTTPError, OSError) as exc:
        raise UserError(
            f"cannot reach the Hugging Face hub for {kind} {repo_id!r} "
            f"({type(exc).__name__}; offline? {OFFLINE_HINT})"
        ) from None
