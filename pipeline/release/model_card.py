"""MODEL_CARD.md: a release's card.json rendered for the person deciding whether to deploy it.

Everything in it comes from card.json; a section without data says so instead of leaving a gap.
"""

from __future__ import annotations

from typing import Any

from whisper_npu.card import Card
from whisper_npu.whisper_io import GRAPHS


def _table(header: tuple[str, ...], rows: list[tuple[Any, ...]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return lines


def _percent(value: Any) -> str:
    return f"{value:.2%}" if isinstance(value, int | float) else "n/a"


def _op(entry: Any) -> str:
    if isinstance(entry, dict):
        return f"{entry.get('op_type')} ({entry.get('count')}, {entry.get('reason')})"
    return str(entry)


def _usage(card: Card) -> list[str]:
    return [
        "## Use",
        "",
        "```bash",
        f"dvc artifacts get <repo> {card.artifact} --rev vX.Y.Z -o {card.artifact}",
        f"whisper-npu verify {card.artifact}        # sha256 of every file against card.json",
        f"whisper-npu transcribe --artifact {card.artifact} audio.wav",
        "```",
    ]


def _metrics(card: Card) -> list[str]:
    """Each figure in its own unit (WER in %, its delta in points, times in ms, speedups x)."""
    lines = ["## Metrics (last bench)", ""]
    if card.metrics is None:
        return [*lines, "No bench metrics yet."]
    rows = [(name, unit.show(value)) for name, value, unit in sorted(card.metrics.figures())]
    return lines + _table(("metric", "value"), rows)


def _made_for(compiled: dict[str, Any]) -> str:
    """The releases it runs with and whether its EP cache ships (cards before these fields
    render as they did)."""
    if "ryzen_ai_releases" not in compiled:
        return ""
    cache = (
        "the EP cache ships in npu/cache."
        if compiled.get("ep_cache")
        else "no EP cache ships: the first NPU run compiles."
    )
    return f" Made for Ryzen AI {', '.join(compiled['ryzen_ai_releases'])}; {cache}"


def _forecast(card: Card) -> list[str]:
    compiled = card.compile
    if "cpu_only" in compiled:
        return ["## Runs on", "", f"{compiled['cpu_only']}."]
    lines = [
        "## NPU compile",
        "",
        f"Target `{compiled['target']}`, Ryzen AI {compiled['ryzen_ai_version']}, VitisAI EP "
        f"{'available' if compiled['ep_available'] else 'not available'} when compiled."
        + _made_for(compiled),
        "",
    ]
    forecast = compiled["forecast"]
    if not forecast:
        return [*lines, "No partition forecast."]
    lines += [
        f"Partition forecast, `{forecast['flow']}` flow (rules from AMD's public partitions, "
        "pipeline/npu/data/npu_flows.json):",
        "",
    ]
    rows = [
        (
            graph,
            _percent(forecast[graph]["coverage"]),
            forecast[graph]["npu_subgraphs"],
            forecast[graph]["cpu_islands"],
            ", ".join(_op(entry) for entry in forecast[graph]["cpu_ops"]) or "none",
        )
        for graph in GRAPHS
    ]
    lines += _table(("graph", "ops on the NPU", "NPU subgraphs", "CPU islands", "on the CPU"), rows)
    return [
        *lines,
        "",
        f"Dispatches per 30 s window: {forecast['dispatches_per_window']} "
        f"({forecast['macs_per_window'] / 1e9:,.1f} G MACs); clean partition: "
        f"{forecast['clean']}. AMD's operator table as an allowlist would give "
        f"{forecast['table_dispatches_per_window']}.",
    ]


def _quantization(card: Card) -> list[str]:
    q = card.quantization
    lines = ["## Quantization", ""]
    if q is None:
        return [*lines, "None: float32 graphs as exported."]
    calibration = q["calibration"]
    lines += [
        f"- backend {q['backend']} {q['backend_version'] or ''}, grid {q['grid']}, decoder "
        f"{q['decoder_variant']}, op types {', '.join(q['op_types'] or [])}"
        + ("; activations quantized at run time (dynamic)" if q.get("dynamic") else ""),
        *(f"- {graph} in the {form}" for graph, form in (q.get("form") or {}).items()),
        f"- held-back WER {_percent(q['holdout_wer'])} against fp32 "
        f"{_percent(q['fp32_holdout_wer'])} on {q.get('holdout_words')} words "
        f"(budget +{q['max_wer_delta']} points: {'met' if q['budget_met'] else 'NOT MET'})",
        f"- calibration set `{calibration['manifest_sha256']}`: {calibration['clips']} clips "
        f"({calibration['decoder_steps']} decoder steps) recorded through the fp32 bundle "
        f"`{calibration['fp32_bundle_sha256']}`, {calibration['holdout_clips']} held back",
        "",
        "Layers kept float (output SNR with only that layer rounded):",
        "",
    ]
    for graph in GRAPHS:
        kept = [
            f"`{layer['node']}` ({layer['snr_db']:.1f} dB)"
            if layer["snr_db"] is not None
            else f"`{layer['node']}`"
            for layer in q["excluded"][graph]
        ]
        lines.append(f"- {graph}: {', '.join(kept) or 'none'}")
    header: tuple[str, ...] = ("layers kept float per graph", "held-back WER", "delta")
    rows: list[tuple[Any, ...]] = [
        (a["excluded_per_graph"], *_clean_cells(a)) for a in q["attempts"]
    ]
    if q.get("conditions"):  # a card from before held-back conditions renders as it did
        header += ("rejected by",)
        rows = [
            (*row, a.get("rejected_by") or ("" if a["passed"] else "clean"))
            for row, a in zip(rows, q["attempts"], strict=True)
        ]
    return [*lines, *_held_back_conditions(q), "", *_table(header, rows)]


def _clean_cells(attempt: dict[str, Any]) -> tuple[str, str]:
    """A rung's clean held-back WER and delta: a lower bound when its scoring stopped early,
    none when a degraded condition rejected it before the clean clips were reached."""
    scored = attempt.get("conditions")
    if scored is not None and "clean" not in scored:
        return "not scored", "-"
    bound = "" if attempt.get("complete", True) else "≥ "
    return bound + _percent(attempt["holdout_wer"]), bound + f"{attempt['wer_delta']:+.2f}"


def _held_back_conditions(q: dict[str, Any]) -> list[str]:
    """The kept rung on each held-back condition (params conditions.holdback), clean included:
    the budget holds on every one of them."""
    conditions = q.get("conditions") or {}
    if not conditions:
        return []
    rows = [
        (
            name,
            str(c["clips"]),
            _percent(c["fp32_wer"]),
            _percent(c["wer"]),
            f"+{c['budget']:.2f}",
            f"{c['margin']:+.2f}",
            f"{c['loops']} ({c['fp32_loops']})",
        )
        for name, c in conditions.items()
    ]
    header = ("held-back condition", "clips", "fp32 WER", "WER", "budget", "margin", "loops (fp32)")
    return ["", *_table(header, rows)]


def _provenance(card: Card) -> list[str]:
    model, export = card.model or {}, card.export
    dims = export["dims"] or {}
    lines = [
        "## Provenance",
        "",
        f"- weights: `{model.get('source')}` ({model.get('kind')}, revision "
        f"{model.get('revision')}), converted weights sha256 `{model.get('model_sha256')}`",
    ]
    lines += [
        f"- source file `{name}` sha256 `{digest}`"
        for name, digest in (model.get("source_sha256") or {}).items()
    ]
    lines.append(
        f"- export: opset {export['opset']}, static shapes, "
        + ", ".join(f"{key} {value}" for key, value in sorted(dims.items()))
    )
    if export["parity"]:
        parity = export["parity"]
        lines.append(
            f"- parity against PyTorch: cross K/V within {parity.get('cross_kv_max_abs_error')}, "
            f"logits within {parity.get('logits_max_abs_error')}, "
            f"{len(parity.get('transcripts_differing', []))} of "
            f"{parity.get('transcript_clips')} transcripts differ"
        )
    lines.append(f"- bundle.json sha256 `{card.sources.bundle_sha256}`")
    rows = [(name, value) for name, value in sorted(card.versions.items())]
    return [*lines, "", *_table(("tool", "version"), rows)]


def render_model_card(card: Card) -> str:
    runs_on = (
        "ONNX Runtime's CPU execution provider"
        if "cpu_only" in card.compile
        else f"the AMD Ryzen AI NPU, target `{card.target}`"
    )
    lines = [
        f"# {card.artifact}",
        "",
        f"Whisper `{(card.model or {}).get('source')}` as static-shape ONNX for {runs_on}. "
        f"Variant `{card.variant}`: {card.variant_description}.",
        "",
    ]
    lines += [f"> Note: {note}" for note in card.notes]
    for section in (_usage, _metrics, _forecast, _quantization, _provenance):
        lines += ["", *section(card)]
    files = [(f"`{name}`", f"`{digest}`") for name, digest in sorted(card.files.items())]
    lines += ["", "## Files (sha256; `whisper-npu verify` re-checks them)", ""]
    lines += _table(("file", "sha256"), files)
    return "\n".join(lines) + "\n"
