"""Concurrent-load figures for `whisper-npu serve`: N requests from C client threads through the
official `openai` client, then requests/s, p50/p95 latency and the error count.

    whisper-npu serve --artifact artifacts/bundles/fp32 &
    python scripts/load_test.py --file clip.wav --requests 20 --concurrency 4

Bounded on purpose: at most 200 requests, each with a timeout, and only against this machine
(the point is the server's queueing, not load on anyone else's)."""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlparse

import openai

LOCAL = {"127.0.0.1", "localhost", "::1"}


def one_request(client: openai.OpenAI, audio: bytes, fmt: str) -> float | None:
    """Seconds the request took, or None when it failed."""
    start = time.perf_counter()
    try:
        client.audio.transcriptions.create(
            model="whisper-1",
            file=("clip.wav", audio),
            response_format=fmt,  # type: ignore[call-overload]
        )
    except openai.OpenAIError as exc:
        print(f"error: {type(exc).__name__}: {str(exc)[:120]}", file=sys.stderr)
        return None
    return time.perf_counter() - start


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--file", type=Path, required=True)
    parser.add_argument("--requests", type=int, default=20, choices=range(1, 201), metavar="N")
    parser.add_argument("--concurrency", type=int, default=4, choices=range(1, 33), metavar="C")
    parser.add_argument("--response-format", default="json")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per request")
    args = parser.parse_args()
    if urlparse(args.url).hostname not in LOCAL:
        parser.error("the load test only runs against this machine (127.0.0.1, localhost, ::1)")
    client = openai.OpenAI(
        base_url=f"{args.url}/v1", api_key="unused", max_retries=0, timeout=args.timeout
    )
    audio = args.file.read_bytes()
    start = time.perf_counter()
    with ThreadPoolExecutor(args.concurrency) as pool:
        outcomes = list(
            pool.map(
                lambda _: one_request(client, audio, args.response_format), range(args.requests)
            )
        )
    wall = time.perf_counter() - start
    latencies = [seconds for seconds in outcomes if seconds is not None]
    errors = len(outcomes) - len(latencies)
    print(f"requests {args.requests}  concurrency {args.concurrency}  errors {errors}")
    if latencies:
        print(
            f"throughput {len(latencies) / wall:.2f} requests/s  "
            f"latency p50 {percentile(latencies, 0.5):.2f} s  "
            f"p95 {percentile(latencies, 0.95):.2f} s  "
            f"mean {statistics.fmean(latencies):.2f} s  (wall {wall:.1f} s)"
        )
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
