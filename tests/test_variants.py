"""The variants registry is the one list: params defaults, the CLI, dvc.yaml's registry entries
and plot columns must name the same variants, in the same order."""

from __future__ import annotations

import argparse
from typing import get_args

import pytest
import yaml

from pipeline.config import CompileParams, QuantizeParams, Target, load_params
from pipeline.release.build import artifact_name
from tests.conftest import REPO, bundle_record
from whisper_npu.bundle import BundleRecord
from whisper_npu.cli import build_parser
from whisper_npu.errors import UserError
from whisper_npu.variants import (
    BASELINE,
    CPU_ONLY_NOTE,
    DEFAULT_VARIANTS,
    QUANTIZED,
    VARIANTS,
    XDNA1,
    XDNA2,
    Variant,
)

DVC = yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))
ALL = [variant.value for variant in Variant]
QUANTIZED_NAMES = [variant.value for variant in QUANTIZED]


def test_every_variant_has_one_row_and_only_the_baseline_is_not_quantized():
    assert [spec.variant for spec in VARIANTS.values()] == list(VARIANTS) == list(Variant)
    assert [v for v, spec in VARIANTS.items() if spec.quant is None] == [BASELINE]
    assert sorted(XDNA1.targets + XDNA2.targets) == sorted(get_args(Target))


def test_params_defaults_follow_the_registry():
    quantize, compile_ = QuantizeParams(), CompileParams()
    assert quantize.variants == [v for v in DEFAULT_VARIANTS if v in QUANTIZED]
    assert quantize.variants == [Variant.BF16, Variant.CPU_INT8]
    assert list(quantize.max_wer_delta) == list(QUANTIZED)
    assert compile_.variants == list(DEFAULT_VARIANTS)
    assert compile_.variants == [Variant.FP32, Variant.BF16, Variant.CPU_INT8]
    assert all(VARIANTS[v].experimental for v in QUANTIZED if v not in DEFAULT_VARIANTS)
    committed = load_params(REPO / "params.yaml")
    assert committed.quantize.max_wer_delta == quantize.max_wer_delta


def test_the_baseline_is_refused_as_a_quantize_variant(tmp_path):
    raw = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    raw["quantize"]["variants"] = ["fp32"]
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    with pytest.raises(UserError) as error:
        load_params(path)
    message = str(error.value)
    assert "\n" not in message
    assert message.endswith(
        "quantize.variants.0: Input should be 'a16w8', 'bf16', 'xint8', 'a8w8' or 'cpu-int8' "
        "(got 'fp32')"
    )


def test_cli_variant_choices_are_the_quantized_variants():
    subcommands = next(
        action
        for action in build_parser()._actions
        if isinstance(action, argparse._SubParsersAction)
    )
    quantize = subcommands.choices["quantize"]
    variant = next(action for action in quantize._actions if "--variant" in action.option_strings)
    assert variant.choices == QUANTIZED_NAMES


def named(source: str, variant: str) -> BundleRecord:
    return BundleRecord.model_validate(bundle_record(variant, model={"source": source}))


def test_dvc_registry_entries_are_the_registry():
    params = load_params(REPO / "params.yaml").model
    source = params.source
    artifacts = {
        name.replace("${model.name}", params.name): entry
        for name, entry in DVC["artifacts"].items()
    }
    assert list(artifacts) == [artifact_name(named(source, v)) for v in DEFAULT_VARIANTS]
    for name, entry in artifacts.items():
        spec = VARIANTS[entry["meta"]["variant"]]
        assert name == artifact_name(named(source, spec.variant))
        assert entry["path"] == f"artifacts/release/{spec.variant}"
        assert spec.variant in entry["labels"]
        family = spec.meant_for
        expected = f"for {family.name}" if family else "the accuracy baseline"
        if spec.cpu_only:  # built for no NPU generation: the entry says so, as its card does
            expected = CPU_ONLY_NOTE
            assert entry["meta"]["target"] == "cpu" and "cpu" in entry["labels"]
        assert expected in entry["desc"], name


def test_dvc_plot_columns_are_the_compile_variants():
    columns = [
        column
        for plot in DVC["plots"]
        if isinstance(plot, dict)
        for spec in plot.values()
        for file, column in spec["y"].items()
        if file.endswith("decoder_by_position.csv")
    ]
    committed = load_params(REPO / "params.yaml").compile.variants
    assert columns == [[v.value for v in DEFAULT_VARIANTS]] and committed == list(DEFAULT_VARIANTS)
