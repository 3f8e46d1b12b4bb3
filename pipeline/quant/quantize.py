"""The `quantize` stage: an fp32 bundle → a quantized bundle per variant that keeps WER.

Whisper collapses under naive 8-bit activations, so precision is chosen by measurement: the
`sensitivity` stage ranks every compute layer by how much rounding it alone hurts the output;
here the k most sensitive layers of each graph stay float, for k on the ladder 0, 1, 2, 4, …,
and the first k within the variant's budget wins. The budget holds on each held-back
condition (never the eval set): the clean held-back calibration clips and the degraded copies
of them the conditions stage makes (babble, say), where quantization error shows first. On
each, the WER may rise by the variant's points over the fp32 bundle's on the same clips, and
no more clips may loop than fp32's did. A multilingual model adds the multilingual set's
held-back half, each clip transcribed and scored in its own language, so a variant cannot pass
on English and loop on the other languages. Attempts are cheap to reject: the quantizer calibrates
once per graph and later attempts reuse its ranges, the degraded conditions are scored first,
and an attempt stops being scored as soon as one condition exceeds its allowance (errors and
loops only accumulate), so a hallucinating 8-bit attempt is rejected after a few clips. Only
the winning attempt is scored on every held-back clip.

A variant that no rung brings inside its budget is still written, with the most float layers
the ladder allows and `budget_met: false`, so one variant cannot take down the whole pipeline;
compile, bench, release and the card say so, and the bench gate judges it against the
committed baseline like any other variant.
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm import tqdm

from pipeline.config import QuantizeParams
from pipeline.npu.graph_check import check_bundle_graphs
from pipeline.provenance import package_version
from pipeline.quant.backends import QuantBackend, QuantJob, get_backend
from pipeline.quant.calibration import CLEAN, LANGUAGES, CalibrationSet, FeedReader
from pipeline.quant.npu_form import FORM, write_npu_form
from pipeline.quant.plan import QuantizePlan
from pipeline.quant.sensitivity import ranked_layers
from pipeline.sources.condition_sets import ConditionSet, load_condition_sets
from pipeline.sources.speech_sets import clip_samples, load_saved_set
from pipeline.throughput import transcribe_all
from whisper_npu.bundle import (
    Attempt,
    Bundle,
    BundleRecord,
    ConditionAttempt,
    ConditionScore,
    HeldBackTexts,
    Quantization,
)
from whisper_npu.errors import UserError, say
from whisper_npu.fsutil import atomic_dir, sha256_tree
from whisper_npu.layout import BUNDLE_FILE, QUANTIZATION_REPORT_FILE, graph_file
from whisper_npu.variants import QUANTIZED, Variant
from whisper_npu.wer import EditCounts, clip_edits_in, is_loop_in, total_edits
from whisper_npu.whisper_io import GRAPHS

if TYPE_CHECKING:
    from pipeline.sources.multilingual import LanguageHalf

# The distribution whose version a bundle records for its backend (vai_q_onnx: the SDK's own).
BACKEND_PACKAGES = {"quark": "amd-quark", "ort": "onnxruntime"}


def exclusion_ladder(limit: int) -> list[int]:
    """0, 1, 2, 4, … up to `limit`: few quantizer runs, and small k is tried first."""
    steps, k = [0], 1
    while k <= limit:
        steps.append(k)
        k *= 2
    return steps


def search_ladder(ladder: list[int], passes: Callable[[int], bool]) -> int | None:
    """The first rung of `ladder` that passes, or None (then every rung was tried).

    The ladder doubles, so scanning it in order is already an exponential search; and it beats
    bisecting it here because a failing rung is cheap (restored ranges, scoring abandoned once
    over budget) while a passing one is scored on every clip: in order, exactly one is.
    """
    return next((k for k in ladder if passes(k)), None)


def standard_error_points(baseline: EditCounts) -> float:
    """fp32's WER on a set, in points, as a binomial standard error over its words."""
    return 100 * wer_standard_error(baseline.wer, baseline.words)


@dataclass(frozen=True)
class Budget:
    """The variant's WER budget (`quantize.max_wer_delta`, the clean clips') and fp32's
    standard error on the clean clips. A degraded condition may lose as many of its own
    standard errors as the clean budget is of clean's: fp32 loses more words there (babble at
    10 dB: ~4x clean's WER) over fewer clips, so the same points would reject rungs for
    noise-level differences between two greedy paths, not for quantization. Never fewer points
    than clean's; with `clean_standard_error` 0 (the clean clips themselves), the points."""

    points: float
    clean_standard_error: float = 0.0

    def on(self, baseline: EditCounts) -> float:
        """The WER points a rung may lose on a set where fp32 made `baseline`."""
        if not self.clean_standard_error:
            return self.points
        scaled = self.points / self.clean_standard_error * standard_error_points(baseline)
        return max(self.points, scaled)


@dataclass(frozen=True)
class HeldBack:
    """One held-back condition's clips with its own fp32 baseline (the calibrate stage's
    transcripts) and budget: noise costs fp32 words and loops too, and only what quantizing
    adds counts."""

    name: str
    references: list[str]
    samples: list[np.ndarray]
    languages: list[str | None]  # each clip's, given and scored in (None: the bundle's)
    baseline: EditCounts
    fp32_loops: int
    budget: float  # WER points a rung may lose here

    @classmethod
    def of(
        cls,
        name: str,
        clips: list[tuple[str, np.ndarray, str | None]],
        fp32_texts: list[str],
        budget: Budget,
    ) -> HeldBack:
        """From (reference, samples, language) per clip and fp32's transcripts of them."""
        references = [reference for reference, _, _ in clips]
        languages = [language for _, _, language in clips]
        scored = list(zip(languages, references, fp32_texts, strict=True))
        baseline = total_edits([clip_edits_in(*clip) for clip in scored])
        return cls(
            name,
            references,
            [samples for _, samples, _ in clips],
            languages,
            baseline,
            sum(is_loop_in(*clip) for clip in scored),
            budget.on(baseline),
        )

    @classmethod
    def of_rows(
        cls, name: str, rows: list[dict[str, Any]], fp32_texts: dict[str, str], budget: Budget
    ) -> HeldBack:
        """From a saved set's rows (with a `language` column: the multilingual set's) and the
        fp32 transcripts by clip id."""
        return cls.of(
            name,
            [(row["text"], clip_samples(row), row.get("language")) for row in rows],
            [fp32_texts[row["id"]] for row in rows],
            budget,
        )

    @property
    def standard_error(self) -> float:
        return standard_error_points(self.baseline)

    def allowed_errors(self) -> int:
        """fp32's errors plus the budget's share of the words, in whole words."""
        return self.baseline.errors + math.floor(self.budget / 100 * self.baseline.words + 1e-9)

    def attempt(self, errors: int, loops: int, complete: bool) -> ConditionAttempt:
        wer = errors / self.baseline.words if self.baseline.words else 0.0
        return ConditionAttempt(
            wer=wer, wer_delta=100 * (wer - self.baseline.wer), loops=loops, complete=complete
        )

    def score(self, hypotheses: Iterator[str], give_up: bool) -> tuple[ConditionAttempt, bool]:
        """This condition's share of a rung's transcripts, and whether the rung went over its
        allowance here: more errors, or more looping clips than fp32. With `give_up`, reading
        stops as soon as it does (errors and loops only accumulate)."""
        allowed = self.allowed_errors()
        errors = loops = scored = 0
        over = False
        mine = islice(hypotheses, len(self.references))
        for language, reference, hypothesis in zip(
            self.languages, self.references, mine, strict=True
        ):
            errors += clip_edits_in(language, reference, hypothesis).errors
            loops += is_loop_in(language, reference, hypothesis)
            scored += 1
            over = errors > allowed or loops > self.fp32_loops
            if over and give_up:
                break
        return self.attempt(errors, loops, scored == len(self.references)), over


def _calibrated_sets(
    calibration: CalibrationSet, conditions_dir: Path | None
) -> list[tuple[ConditionSet, HeldBackTexts]]:
    """The degraded held-back sets in `conditions_dir` with the fp32 transcripts made of them:
    the very sets (names, clips, digests) the calibrate stage transcribed, since a budget
    measured from another set's transcripts would mean nothing."""
    recorded = calibration.manifest.conditions or {}
    found = load_condition_sets(conditions_dir) if conditions_dir is not None else []
    if [c.name for c in found] != list(recorded):
        raise UserError(
            f"{calibration.root}: calibrated with holdback conditions {list(recorded)}, not "
            f"{[c.name for c in found]} (run `whisper-npu calibrate` with the same --conditions)"
        )
    for c in found:
        texts = recorded[c.name]
        if list(c.speech["id"]) != texts.clips or c.entry.arrow_sha256 != texts.arrow_sha256:
            raise UserError(
                f"{conditions_dir}: condition {c.name!r} is not the set {calibration.root} was "
                "calibrated with (run `whisper-npu calibrate` again)"
            )
    return [(c, recorded[c.name]) for c in found]


def _calibrated_languages(
    calibration: CalibrationSet, languages_dir: Path | None
) -> list[tuple[LanguageHalf, dict[str, str]]]:
    """The multilingual set's held-back half with the fp32 transcripts by clip id, when the
    calibrate stage made them (a multilingual model); the very clips it transcribed."""
    from pipeline.sources.multilingual import load_language_half

    recorded = calibration.manifest.languages
    half = load_language_half(languages_dir, "holdback") if languages_dir is not None else None
    if (half is None) != (recorded is None):
        raise UserError(
            f"{calibration.root}: calibrated {'with' if recorded else 'without'} the "
            f"multilingual held-back half, quantized {'with' if half else 'without'} it "
            "(give `whisper-npu calibrate` and `quantize` the same --languages)"
        )
    if half is None or recorded is None:
        return []
    if list(half.speech["id"]) != recorded.clips or half.arrow_sha256 != recorded.arrow_sha256:
        raise UserError(
            f"{languages_dir}: not the multilingual set {calibration.root} was calibrated with "
            "(run `whisper-npu calibrate` again)"
        )
    return [(half, dict(zip(recorded.clips, recorded.fp32_texts, strict=True)))]


@dataclass(frozen=True)
class Verdict:
    """A rung on the held-back conditions: each one scored, in order, and the first that it
    went over (None: within budget on every one)."""

    scored: dict[str, ConditionAttempt]
    rejected_by: str | None


@dataclass(frozen=True)
class Holdout:
    """Every held-back set, degraded conditions first (a rung fails there sooner), then a
    multilingual model's held-back half of the multilingual set, and the clean clips last, each
    scored clip by clip against its own fp32 baseline and `Budget`."""

    conditions: list[HeldBack]

    @classmethod
    def load(cls, inputs: QuantizeInputs, calibration: CalibrationSet, budget: float) -> Holdout:
        wanted = dict(zip(calibration.holdout_ids, calibration.holdout_fp32_texts, strict=True))
        rows = [row for row in load_saved_set(inputs.data, "calibration") if row["id"] in wanted]
        if len(rows) != len(wanted):
            raise UserError(f"{inputs.data}: held-back clips missing from the calibration set")
        clean = HeldBack.of_rows(CLEAN, rows, wanted, Budget(budget))
        scaled = Budget(budget, clean.standard_error)
        degraded = [
            HeldBack.of_rows(
                found.name,
                list(found.speech),
                dict(zip(texts.clips, texts.fp32_texts, strict=True)),
                scaled,
            )
            for found, texts in _calibrated_sets(calibration, inputs.conditions)
        ]
        languages = [
            HeldBack.of_rows(LANGUAGES, list(half.speech), texts, scaled)
            for half, texts in _calibrated_languages(calibration, inputs.languages)
        ]
        return cls([*degraded, *languages, clean])

    @property
    def clean(self) -> HeldBack:
        return self.conditions[-1]

    @property
    def samples(self) -> list[np.ndarray]:
        """Every condition's clips, in scoring order: one stream of transcripts per rung."""
        return [samples for held in self.conditions for samples in held.samples]

    @property
    def languages(self) -> list[str | None]:
        """The language each of `samples` is transcribed in."""
        return [language for held in self.conditions for language in held.languages]

    def judge(self, hypotheses: Iterable[str], give_up: bool) -> Verdict:
        """A rung's transcripts of `samples`, condition by condition. With `give_up`, scoring
        ends at the first condition over its allowance, so a bad rung costs a few clips."""
        stream = iter(hypotheses)
        scored: dict[str, ConditionAttempt] = {}
        rejected_by = None
        for held in self.conditions:
            scored[held.name], over = held.score(stream, give_up)
            if over and rejected_by is None:
                rejected_by = held.name
                if give_up:
                    break
        return Verdict(scored, rejected_by)


def condition_scores(holdout: Holdout, kept: Attempt) -> dict[str, ConditionScore]:
    """The kept rung on each condition: scored whole, as the passing or the fallback rung is."""
    assert kept.conditions is not None
    scores = {}
    for held in holdout.conditions:
        scored = kept.conditions[held.name]
        scores[held.name] = ConditionScore(
            clips=len(held.references),
            words=held.baseline.words,
            fp32_wer=held.baseline.wer,
            wer=scored.wer,
            budget=held.budget,
            margin=held.budget - scored.wer_delta,
            loops=scored.loops,
            fp32_loops=held.fp32_loops,
        )
    return scores


def wer_standard_error(wer: float, words: int) -> float:
    """Binomial standard error of a WER measured on `words` reference words."""
    return math.sqrt(max(wer * (1 - wer), 0.0) / words) if words else float("nan")


def kept_float(ranking: dict[str, list[tuple[str, float]]], k: int) -> dict[str, list[str]]:
    """The `k` most sensitive layers of each graph: the ones a rung of the ladder keeps float."""
    return {graph: [name for name, _ in ranking[graph][:k]] for graph in GRAPHS}


@dataclass(frozen=True)
class QuantizeInputs:
    """What a variant is quantized from: the export, calibrate, sensitivity, data, (holdback)
    conditions and data_languages outputs."""

    fp32: Path
    calibration: Path
    sensitivity: Path
    data: Path
    conditions: Path | None = None  # the conditions stage's holdback sets
    languages: Path | None = None  # the data_languages stage's output


@dataclass(frozen=True)
class _GraphQuantizer:
    """What every attempt of one variant shares; only the layers kept float and the output
    directory change from rung to rung. Calibrated ranges are cached in `ranges_dir` and
    reused by later attempts."""

    backend: QuantBackend
    params: QuantizeParams
    plan: QuantizePlan
    fp32: Bundle
    calibration: CalibrationSet
    ranges_dir: Path
    sources: dict[str, FloatSource]  # per graph, made once: every rung reads the same

    def write(self, exclude: dict[str, list[str]], out: Path) -> None:
        """Both graphs into `out` (plus the runtime files), each with its own variant's config."""
        params, fp32, calibration = self.params, self.fp32, self.calibration
        for name in fp32.root.iterdir():
            if name.suffix != ".onnx" and name.name != BUNDLE_FILE:
                shutil.copy2(name, out / name.name)
        readers = {
            "encoder": FeedReader(
                lambda: calibration.encoder_feeds(params.encoder_calibration_feeds)
            ),
            "decoder": FeedReader(
                lambda: calibration.decoder_feeds(fp32, params.decoder_calibration_feeds)
            ),
        }
        for graph in GRAPHS:
            source = self.sources[graph]
            self.backend.quantize(
                QuantJob(
                    fp32=source.path,
                    out=out / graph_file(graph),
                    reader=readers[graph],
                    variant=self.plan.graphs[graph].variant,
                    exclude=exclude[graph],
                    op_types=list(source.op_types),
                    ranges_cache=self.ranges_dir / f"{graph}-ranges.json",
                )
            )


@dataclass(frozen=True)
class FloatSource:
    """The float graph one graph is quantized from, and the op types quantized in it."""

    path: Path
    op_types: tuple[str, ...]


def float_sources(
    params: QuantizeParams, plan: QuantizePlan, fp32: Bundle, scratch: Path
) -> dict[str, FloatSource]:
    """Per graph: the fp32 export and `quantize.op_types`, or for a variant in
    `quantize.npu_form` its rewrite into the x2-int form (written into `scratch`) and every op
    type it computes with."""
    sources = {}
    for graph in GRAPHS:
        exported = fp32.root / graph_file(graph)
        if plan.graphs[graph].variant not in params.npu_form:
            sources[graph] = FloatSource(exported, tuple(params.op_types))
        else:
            rewritten = scratch / f"{graph}-npu-form.onnx"
            sources[graph] = FloatSource(rewritten, tuple(write_npu_form(exported, rewritten)))
    return sources


def _write_record(
    out: Path, fp32: Bundle, variant: Variant, custom_ops: str | None, quantization: Quantization
) -> None:
    """The fp32 record with this variant's graphs, files and quantization in place of parity,
    which does not describe a quantized graph."""
    graphs = {name: report.summary() for name, report in check_bundle_graphs(out).items()}
    files = {
        name: digest
        for name, digest in sha256_tree(out).items()
        if name not in (BUNDLE_FILE, QUANTIZATION_REPORT_FILE)
    }
    fp32.record.but(
        drop=("parity",),
        variant=variant,
        custom_ops=custom_ops,
        quantization=quantization,
        graphs=graphs,
        files=files,
    ).save(out)


def _rungs(ks: list[int]) -> str:
    """[0, 1, 2] → "rungs 0, 1 and 2" (a rung is named by its layers kept float per graph)."""
    *head, last = map(str, ks)
    return f"rungs {', '.join(head)} and {last}" if head else f"rung {last}"


def _decision(attempts: list[Attempt]) -> str:
    """Which condition rejected which rungs: what set the layers kept float."""
    rejected: dict[str, list[int]] = {}
    for a in attempts:
        if a.rejected_by is not None:
            rejected.setdefault(a.rejected_by, []).append(a.excluded_per_graph)
    passed = [a.excluded_per_graph for a in attempts if a.passed]
    kept = f"rung {passed[0]} is kept" if passed else "no rung is within budget"
    if not rejected:
        return f"Decision: {kept}, within budget on every condition."
    unscored = [a.excluded_per_graph for a in attempts if CLEAN not in (a.conditions or {})]
    return (
        "Decision: "
        + "; ".join(f"{name} rejected {_rungs(ks)}" for name, ks in rejected.items())
        + f", so {kept}"
        + (
            f" ({CLEAN} was not scored on {_rungs(unscored)}: a rung's scoring stops at the "
            "first condition over budget)."
            if unscored
            else "."
        )
    )


def _condition_table(q: Quantization) -> list[str]:
    lines = [
        "| condition | clips | words | fp32 WER | WER | delta | budget | margin | loops (fp32) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, c in (q.conditions or {}).items():
        se = wer_standard_error(c.fp32_wer, c.words)
        lines.append(
            f"| {name} | {c.clips} | {c.words} | {c.fp32_wer:.2%} ±{se:.2%} | {c.wer:.2%} "
            f"| {100 * (c.wer - c.fp32_wer):+.2f} | +{c.budget:.2f} | {c.margin:+.2f} "
            f"| {c.loops} ({c.fp32_loops}) |"
        )
    return lines


def _attempt_table(q: Quantization) -> list[str]:
    names = list(q.conditions or {})
    lines = [
        "| layers kept float per graph | " + " | ".join(names) + " | rejected by |",
        "| --- |" + " --- |" * (len(names) + 1),
    ]
    for a in q.attempts:
        cells = []
        for name in names:
            c = (a.conditions or {}).get(name)
            bound = "" if c is None or c.complete else "≥ "
            cells.append(
                "not scored"
                if c is None
                else f"{bound}{c.wer:.2%} ({bound}{c.wer_delta:+.2f}, {c.loops} loops)"
            )
        lines.append(
            f"| {a.excluded_per_graph} | " + " | ".join(cells) + f" | {a.rejected_by or ''} |"
        )
    return lines


def _report(variant: Variant, q: Quantization, ranking: dict[str, list[tuple[str, float]]]) -> str:
    verdict = "met" if q.budget_met else "**not met** (the most float setting tried is kept)"
    lines = [
        f"# {variant}: quantization report",
        "",
        f"Backend {q.backend}, grid {q.grid} (decoder {q.decoder_grid}), "
        + ("activations quantized at run time (dynamic), " if q.dynamic else "")
        + f"op types {', '.join(q.op_types)}.",
        *(f"{graph} in the {form}." for graph, form in q.form.items()),
        f"Budget: WER within +{q.max_wer_delta:.1f} points of fp32's on the clean held-back "
        "clips, within as many of its own standard errors on each degraded one, and no more "
        f"looping clips than fp32 on any: {verdict}.",
        "",
        *_condition_table(q),
        "",
        _decision(q.attempts),
        "",
        "WER (delta in points, looping clips) of each rung tried; ≥: scoring stopped over budget.",
        "",
        *_attempt_table(q),
    ]
    lines += ["", "## Layers kept float", ""]
    for graph in GRAPHS:
        snr = dict(ranking[graph])
        kept = ", ".join(f"`{n}` ({snr[n]:.1f} dB)" for n in q.excluded[graph])
        lines += [f"- {graph}: {kept or 'none'}"]
    lines += ["", "## Most sensitive layers (output SNR with only that layer rounded)", ""]
    for graph in GRAPHS:
        lines += [
            f"- {graph}: " + ", ".join(f"`{n}` {snr:.1f} dB" for n, snr in ranking[graph][:8])
        ]
    return "\n".join(lines) + "\n"


def graph_rankings(sensitivity_dir: Path, plan: QuantizePlan) -> dict[str, list[tuple[str, float]]]:
    """Each graph's layers ranked on the grid that graph is quantized to."""
    return {graph: ranked_layers(sensitivity_dir, plan.graphs[graph])[graph] for graph in GRAPHS}


@dataclass
class _Ladder:
    """One variant's rungs, each quantized into its own hidden directory of the output's
    scratch and scored on the held-back clips; what each cost is kept for the report."""

    quantizer: _GraphQuantizer
    bundle_record: BundleRecord  # what each attempt's bundle.json holds
    ranking: dict[str, list[tuple[str, float]]]
    holdout: Holdout
    rungs: list[int]
    scratch: Path
    attempts: list[Attempt] = field(default_factory=list)
    # Wall-clock seconds per attempt go to stdout only: in bundle.json they would make two
    # identical runs produce different outputs (and DVC hashes).
    seconds: dict[int, float] = field(default_factory=dict)

    def attempt_dir(self, k: int) -> Path:
        return self.scratch / f".attempt-{k}"

    def passes(self, k: int) -> bool:
        start = time.perf_counter()
        target = self.attempt_dir(k)
        target.mkdir()
        self.quantizer.write(kept_float(self.ranking, k), target)
        self.bundle_record.save(target)
        # The largest rung is the fallback when nothing passes: it is always scored whole.
        last = k == self.rungs[-1]
        holdout = self.holdout
        with closing(transcribe_all(target, holdout.samples, holdout.languages)) as transcripts:
            verdict = self.holdout.judge((t.text for t in transcripts), give_up=not last)
        ok = verdict.rejected_by is None
        clean = self.holdout.clean
        # Not reached when a degraded condition rejected the rung first: no clean errors yet.
        on_clean = verdict.scored.get(clean.name) or clean.attempt(0, 0, complete=False)
        self.attempts.append(
            Attempt(
                excluded_per_graph=k,
                holdout_wer=on_clean.wer,
                wer_delta=on_clean.wer_delta,
                complete=on_clean.complete,
                passed=ok,
                conditions=verdict.scored,
                rejected_by=verdict.rejected_by,
            )
        )
        if not ok and not last:
            shutil.rmtree(target)
        self.seconds[k] = time.perf_counter() - start
        return ok

    def search(self, description: str) -> int | None:
        """The first rung within budget (None: none), its attempt moved into the scratch."""
        with tqdm(total=len(self.rungs), desc=description, unit="try") as progress:

            def scored(k: int) -> bool:
                ok = self.passes(k)
                progress.update()
                return ok

            chosen = search_ladder(self.rungs, scored)
        kept = chosen if chosen is not None else self.rungs[-1]
        for name in self.attempt_dir(kept).iterdir():
            name.rename(self.scratch / name.name)
        for stale in self.scratch.glob(".attempt-*"):
            shutil.rmtree(stale)
        return chosen


def quantize_variant(
    params: QuantizeParams, variant: Variant, inputs: QuantizeInputs, out_dir: Path
) -> dict[str, Any]:
    if variant not in params.variants:
        raise UserError(f"variant {variant!r} is not in quantize.variants {params.variants}")
    backend = get_backend(QUANTIZED[variant].backend or params.backend)
    fp32 = Bundle.load(inputs.fp32.resolve())  # readers open it again from Quark's directory
    calibration = CalibrationSet(inputs.calibration)
    calibration.check_fits(fp32)
    plan = QuantizePlan.of(variant, params.decoder_variant)
    ranking = graph_rankings(inputs.sensitivity, plan)
    budget = params.max_wer_delta[variant]
    holdout = Holdout.load(inputs, calibration, budget)
    baseline = holdout.clean.baseline
    with atomic_dir(Path(out_dir)) as scratch:
        ranges_dir = scratch / ".ranges"
        ranges_dir.mkdir()
        sources = float_sources(params, plan, fp32, ranges_dir)
        ladder = _Ladder(
            quantizer=_GraphQuantizer(
                backend, params, plan, fp32, calibration, ranges_dir, sources
            ),
            bundle_record=fp32.record.but(custom_ops=backend.custom_ops_for(variant)),
            ranking=ranking,
            holdout=holdout,
            rungs=exclusion_ladder(params.max_excluded),
            scratch=scratch,
        )
        chosen = ladder.search(f"quantize {variant}")
        op_types = list(dict.fromkeys(op for g in GRAPHS for op in sources[g].op_types))
        shutil.rmtree(ranges_dir)
        budget_met = chosen is not None
        kept = chosen if chosen is not None else ladder.rungs[-1]
        final = next(a for a in ladder.attempts if a.excluded_per_graph == kept)
        if final.rejected_by is not None:
            over = (final.conditions or {})[final.rejected_by]
            say(
                "quantize",
                f"{variant}: no setting within +{budget} WER points and fp32's loops on every "
                f"held-back condition (with {kept} layers per graph float, {final.rejected_by} "
                f"is {over.wer_delta:+.2f} points, {over.loops} loops); written with "
                "budget_met: false",
                kind="warning",
            )
        quantization = Quantization.model_validate(
            {
                "backend": backend.name,
                "backend_version": package_version(BACKEND_PACKAGES[backend.name])
                if backend.name in BACKEND_PACKAGES
                else None,
                **plan.record(),
                "dynamic": plan.encoder.quant.dynamic,
                "op_types": op_types,
                "form": {g: FORM for g in GRAPHS if plan.graphs[g].variant in params.npu_form},
                "max_wer_delta": budget,
                "budget_met": budget_met,
                "fp32_holdout_wer": baseline.wer,
                "holdout_wer": final.holdout_wer,
                "holdout_words": baseline.words,
                "holdout_wer_se": wer_standard_error(baseline.wer, baseline.words),
                "holdout_clips": calibration.holdout_ids,
                "excluded": kept_float(ranking, kept),
                "sensitivity_db": {graph: dict(ranking[graph]) for graph in GRAPHS},
                "attempts": ladder.attempts,
                "calibration": calibration.manifest,
                "conditions": condition_scores(holdout, final),
            }
        )
        (scratch / QUANTIZATION_REPORT_FILE).write_text(
            _report(variant, quantization, ranking), encoding="utf-8"
        )
        _write_record(scratch, fp32, variant, backend.custom_ops_for(variant), quantization)
    return {
        "variant": variant,
        "budget_met": budget_met,
        "excluded_per_graph": kept,
        "attempts": [a.model_dump() for a in ladder.attempts],
        "quantize_s": {k: round(s, 1) for k, s in ladder.seconds.items()},
    }
