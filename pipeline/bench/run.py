"""The `bench` stage: WER and latency of every variant against the fp32 CPU baseline, one run.

After `bench.warmup` untimed transcriptions per engine, `bench.repeats` passes over
`bench.latency_clips` short-form clips (spread evenly by duration) give the latency figures; then
one pass over the rest of the eval set completes every engine's transcripts for WER: here, or
with `bench.ray` sharded over Ray actors (pipeline.bench.sharded) once the timed workers have
stopped, so latency is always this machine's. Two engines skip that pass when they can: the
fp32 baseline, whose export parity gate proved its transcript of every eval clip identical to
the reference stage's, and the transformers peer, which is the reference stage's own model and
code; each takes the reference transcripts only if its timed transcripts match them here, clip
for clip, and is run over the whole set otherwise. Decoder time by token position pools every
decoder call of both passes made here (the long-form clips reach the far positions; with
`bench.ray` only the timed clips' calls are this machine's, so only they count).

Given the `conditions` stage's output, every engine then transcribes every degraded condition's
clips, engines interleaved, before its worker stops: WER passes, untimed, whose calls stay out
of the latency figures. With `bench.ray` too they run here (a few clips per condition; only the
clean set's WER pass is sharded).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.bench import worker
from pipeline.bench.environment import conditions_run, run_info
from pipeline.bench.evaluate import eval_clips, load_eval_clips
from pipeline.bench.metrics import BenchMetrics, BenchResult, Machine, RunInfo
from pipeline.bench.records import ConditionClips, EngineSpec, EvalClips, Measurement, Samples
from pipeline.bench.results import bench_tables, condition_tables, write_table
from pipeline.bench.schedule import interleave
from pipeline.bench.selection import bench_specs
from pipeline.bench.stats import (
    condition_metrics,
    decoder_by_position,
    engine_metrics,
    time_split,
)
from pipeline.sources.speech_sets import pick_latency_clips
from whisper_npu.errors import UserError
from whisper_npu.figures import PEERS
from whisper_npu.host import cpu_model
from whisper_npu.layout import RUN_FILE
from whisper_npu.variants import BASELINE

if TYPE_CHECKING:
    from pipeline.config import BenchParams


@dataclass(frozen=True)
class BenchPaths:
    """Where a bench reads and writes. With `reference_dir` (the reference stage's output),
    engines whose transcripts it already holds are timed but not run over the whole eval set
    again (see the module's docstring)."""

    compiled_dir: Path
    data_dir: Path
    out_file: Path
    clips_file: Path  # the per-clip results (JSON Lines) every WER figure is summed from
    plots_dir: Path
    baseline_bundle: Path
    model_dir: Path
    reference_dir: Path | None = None
    languages_dir: Path | None = None  # data_languages' output (multilingual bundles)
    device_reports_dir: Path | None = None  # device reports sent back (pipeline.bench.device)
    conditions_dir: Path | None = None  # the conditions stage's eval output (degraded clips)


def known_transcripts(
    reference_dir: Path | None, baseline_bundle: Path, clip_ids: Sequence[str]
) -> dict[str, dict[str, str]]:
    """Engines whose transcripts of the eval set are already on disk: the transformers peer
    (the reference stage is that model) and the fp32 baseline when its parity gate matched the
    reference on every eval clip. The bench still checks them on the clips it times."""
    from pipeline.bench.evaluate import reference_texts
    from whisper_npu.bundle import BundleRecord

    if reference_dir is None:
        return {}
    texts = reference_texts(reference_dir)
    if not set(clip_ids) <= texts.keys():
        return {}
    known = {"transformers": texts}
    parity = BundleRecord.load(baseline_bundle).parity
    if (
        parity is not None
        and parity.transcript_clips == len(texts)  # it compared every reference clip
        and parity.transcripts_differing == []
    ):
        known[BASELINE] = texts
    return known


def wer_pass_on_ray(
    specs: Sequence[EngineSpec],
    others: Sequence[int],
    clips: EvalClips,
    address: str,
    timeout_s: float,
) -> tuple[Samples, str]:
    """The WER pass (`others`, the untimed clips) of each engine on Ray actors, sharded as
    `whisper-npu evaluate --ray` shards; and where it ran, in words. The actors' encoder and
    decoder calls are dropped: latency, by token position too, is the local passes' alone."""
    from pipeline.bench.sharded import connected, run_sharded

    out: Samples = {}
    split: dict[str, Any] = {}
    with connected(address, timeout_s):
        for spec in specs:
            samples, _, split = run_sharded(spec, clips.samples, others, None)
            out[spec.name] = [replace(s, encoder_ms=(), decoder_ms=()) for s in samples]
    where = address or "ray.init() default"
    return out, f"{where}, {split.get('workers', 0)} actors, {split.get('shards', 0)} shards"


def load_condition_clips(conditions_dir: Path) -> list[ConditionClips]:
    """Every degraded condition the `conditions` stage saved for the eval set, in its order.
    Here, not beside `load_eval_clips`: the stages that evaluate only the clean set (the
    export's parity gate) do not import the conditions' code."""
    from pipeline.sources.condition_sets import load_condition_sets

    return [
        ConditionClips(found.name, found.entry.family, found.entry.snr_db, eval_clips(found.speech))
        for found in load_condition_sets(conditions_dir)
    ]


def latency_clips(clips: EvalClips, params: BenchParams) -> list[int]:
    """The clips the timed passes transcribe: `bench.latency_clips` short-form clips, spread
    evenly by duration."""
    from whisper_npu.whisper_io import CHUNK_SECONDS

    latency = pick_latency_clips(clips.durations, params.latency_clips, CHUNK_SECONDS)
    if not latency:
        raise UserError("the eval set has no clip of 30 s or less to time")
    return latency


def timed_passes(
    workers: Sequence[worker.Worker],
    latency: Sequence[int],
    clips: EvalClips,
    params: BenchParams,
    tick: Callable[[], object],
) -> Samples:
    """`bench.warmup` untimed transcriptions per engine, then `bench.repeats` passes over the
    `latency` clips, engines interleaved clip by clip so drift on the machine hits all alike."""
    warmup = [latency[i % len(latency)] for i in range(params.warmup)]
    interleave(workers, warmup, clips.samples, tick)
    return interleave(workers, list(latency) * params.repeats, clips.samples, tick)


def busy_pass(
    workers: Sequence[worker.Worker],
    latency: Sequence[int],
    clips: EvalClips,
    cores: int,
    tick: Callable[[], object],
) -> Samples:
    """One more timed pass over the `latency` clips while `cores` load processes
    (pipeline.bench.load) keep cores busy: how each engine holds up on a machine doing other
    work. None without cores."""
    from pipeline.bench.load import background_load

    if not cores:
        return {}
    with background_load(cores):
        return interleave(workers, latency, clips.samples, tick)


def condition_passes(
    workers: Sequence[worker.Worker],
    conditions: Sequence[ConditionClips],
    tick: Callable[[], object],
) -> dict[str, Samples]:
    """Every engine but the transformers peer over each condition's clips in turn, engines
    interleaved clip by clip. The peer is the slowest engine and the fp32 bundle's parity
    gate holds it to fp32's transcripts; left out, the pass costs a fifth less."""
    scored = [w for w in workers if w.spec.kind != "transformers"]
    return {
        found.name: interleave(scored, range(len(found.clips.ids)), found.clips.samples, tick)
        for found in conditions
    }


def measure(
    specs: Sequence[EngineSpec],
    clips: EvalClips,
    params: BenchParams,
    known: dict[str, dict[str, str]],
    conditions: Sequence[ConditionClips] = (),
) -> Measurement:
    """Warm-up, the latency passes, then the rest of the eval set for the engines that need it,
    then every engine over the degraded `conditions`."""
    from tqdm import tqdm

    latency = latency_clips(clips, params)
    timed_clips = set(latency)
    others = [clip for clip in range(len(clips.samples)) if clip not in timed_clips]
    runs = params.warmup + len(latency) * params.repeats
    runs += len(latency) if params.busy_cores else 0
    with ExitStack() as stack:
        workers = worker.open_workers(specs, stack)
        degraded_runs = sum(len(found.clips.ids) for found in conditions) * sum(
            spec.kind != "transformers" for spec in specs
        )
        total = len(specs) * runs + degraded_runs
        with tqdm(total=total, desc="bench", unit="run", file=sys.stderr) as progress:
            latency_pass = timed_passes(workers, latency, clips, params, progress.update)
            busy = busy_pass(workers, latency, clips, params.busy_cores, progress.update)
            timed_texts = {
                name: {s.clip: s.text for s in runs} for name, runs in latency_pass.items()
            }
            settled = {
                name
                for name, texts in known.items()
                if name in timed_texts
                and all(timed_texts[name][clip] == texts[clips.ids[clip]] for clip in latency)
            }
            unsettled = [w for w in workers if w.spec.name not in settled]
            accuracy: Samples = {}
            if params.ray is None:
                progress.total += len(unsettled) * len(others)
                progress.refresh()
                accuracy = interleave(unsettled, others, clips.samples, progress.update)
            degraded = condition_passes(workers, conditions, progress.update)
        info = {w.spec.name: {**w.info, "peak_rss_mb": w.finish()} for w in workers}
    ran_here = "transcribed in this run"
    if params.ray is not None:
        # Once the local workers have stopped: on one machine, the actors have its cores.
        specs_left = [w.spec for w in unsettled]
        accuracy, where = wer_pass_on_ray(
            specs_left, others, clips, params.ray_address or "", params.ray_timeout_s
        )
        ran_here += f"; the untimed clips on Ray ({where})"
    texts, source = {}, {}
    for name in latency_pass:
        if name in settled:
            texts[name] = [known[name][clip_id] for clip_id in clips.ids]
            source[name] = (
                f"the reference stage's transcripts (identical on the {len(latency)} timed clips)"
            )
        else:
            by_clip = {**timed_texts[name], **{s.clip: s.text for s in accuracy[name]}}
            texts[name] = [by_clip[clip] for clip in range(len(clips.samples))]
            source[name] = ran_here
    return Measurement(latency_pass, accuracy, texts, source, info, degraded, busy)


def run_bench(variants: Sequence[str], params: BenchParams, paths: BenchPaths) -> BenchResult:
    """Measure, then write `paths.plots_dir` (run.json, plot data, PNGs), the per-clip table
    and bench.json (metrics). A multilingual bundle adds the pass over `paths.languages_dir`
    (`pipeline.bench.languages`), after the timed passes. Device reports are read before
    anything is measured, so a malformed one stops the bench at once."""
    from pipeline.bench.device import DeviceReports, benched_bundles, read_device_reports
    from pipeline.bench.languages import language_pass
    from pipeline.bench.plots import write_plots
    from whisper_npu.fsutil import atomic_dir

    started = time.perf_counter()
    clips = load_eval_clips(paths.data_dir)
    specs, skipped = bench_specs(
        variants,
        paths.compiled_dir,
        paths.baseline_bundle,
        paths.model_dir,
        params,
    )
    device = (
        read_device_reports(paths.device_reports_dir, benched_bundles(specs))
        if paths.device_reports_dir
        else DeviceReports({}, {})
    )
    known = known_transcripts(paths.reference_dir, Path(paths.baseline_bundle), clips.ids)
    conditions = load_condition_clips(paths.conditions_dir) if paths.conditions_dir else []
    measured = measure(specs, clips, params, known, conditions)
    languages = language_pass(specs, paths.languages_dir, Path(paths.baseline_bundle))
    tables = bench_tables(measured, clips)
    degraded = condition_tables(measured, conditions)
    figures = engine_metrics(measured, clips, tables)
    metrics = BenchMetrics(
        variants={k: v for k, v in figures.items() if k not in PEERS},
        peers={k: v for k, v in figures.items() if k in PEERS} or None,
        machine=Machine(cpu=cpu_model()),  # the gate compares latency on like CPUs
        languages=languages.report,
        device=device.rows or None,  # absent without a report: bench.json as before
        conditions=condition_metrics(conditions, degraded) or None,  # absent: as before
    )
    run = RunInfo.model_validate(
        {
            **run_info(specs, measured, skipped, clips, params),
            "wall_s": round(time.perf_counter() - started, 1),
            "conditions": conditions_run(conditions, params),
        }
    )
    everything = {
        name: [*runs, *measured.accuracy.get(name, [])] for name, runs in measured.latency.items()
    }
    result = BenchResult(
        metrics,
        run,
        decoder_by_position(everything),
        time_split(measured.latency),
        languages.note,
        device.note(),
    )
    with atomic_dir(Path(paths.plots_dir)) as scratch:
        run.write(scratch / RUN_FILE)
        languages.write(scratch)
        write_plots(scratch, result)
    Path(paths.out_file).parent.mkdir(parents=True, exist_ok=True)
    Path(paths.clips_file).parent.mkdir(parents=True, exist_ok=True)
    write_table(
        Path(paths.clips_file),
        [
            *(row for rows in tables.values() for row in rows),
            *(row for engines in degraded.values() for rows in engines.values() for row in rows),
        ],
    )
    metrics.write(Path(paths.out_file))
    return result
