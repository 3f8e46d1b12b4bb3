"""The bench's WER pass on Ray (`bench.ray`): the same per-clip rows as in one process, latency
still measured here; the setting validated at start-up, and one line without Ray installed."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from pipeline.bench.records import EngineSpec
from pipeline.config import BenchParams, load_params
from tests.conftest import REPO, write_tiny_bundle
from tests.test_bench_results import clips, local_ray, needs_ray
from whisper_npu.errors import UserError

__all__ = ["local_ray"]  # a fixture, used by name


def params_with(tmp_path, **bench) -> object:
    raw = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    raw["bench"].update(bench)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("setting", "address"),
    [(None, None), ("local", ""), ("auto", "auto"), ("ray://head:10001", "ray://head:10001"),
     ("10.0.0.5:6379", "10.0.0.5:6379")],
)  # fmt: skip
def test_bench_ray_takes_local_a_cluster_or_nothing(tmp_path, setting, address):
    params = load_params(params_with(tmp_path, ray=setting)).bench
    assert params.ray == setting and params.ray_address == address


@pytest.mark.parametrize("setting", ["", "ray://", "--address=x", "head:port", "a b:1", 3])
def test_a_bad_bench_ray_is_one_line_naming_the_key(tmp_path, setting):
    with pytest.raises(UserError) as error:
        load_params(params_with(tmp_path, ray=setting))
    message = str(error.value)
    assert "\n" not in message and ": bench.ray: " in message


def test_bench_ray_without_ray_installed_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    from pipeline.bench import sharded
    from whisper_npu.cli import main

    monkeypatch.setattr(sharded.importlib.util, "find_spec", lambda name: None)
    paths = [str(tmp_path / name) for name in ("c", "d", "o.json", "c.jsonl", "p", "b", "m")]
    flags = ["--compiled", "--data", "--out", "--clips", "--plots", "--baseline-bundle", "--model"]
    args = [part for pair in zip(flags, paths, strict=True) for part in pair]
    code = main(["bench", "--params", str(params_with(tmp_path, ray="local")), *args])
    assert code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "whisper-npu bench: error: bench.ray needs Ray, which is not installed "
        "(pip install '.[ray]')"
    ]


@needs_ray
def test_the_wer_pass_on_ray_gives_the_single_process_rows(tmp_path, monkeypatch, local_ray):
    """Two engines on the tiny random bundle, 6 clips: 2 timed here, the other 4 in shards of 2
    over 2 actors per engine. Per-clip rows (hypotheses, normalised texts, edit counts) equal the
    single-process run's; only this machine's decoder calls are pooled by position."""
    from pipeline.bench import sharded
    from pipeline.bench.results import bench_tables
    from pipeline.bench.run import measure

    monkeypatch.setattr(sharded, "SHARD_CLIPS", 2)
    bundle = write_tiny_bundle(tmp_path / "bundle")
    specs = [
        EngineSpec("fp32", "ours", bundle, None, cpu_only=True),
        EngineSpec("a16w8", "ours", bundle, None),
    ]
    audio = clips(6)
    rows = {}
    measured = {}
    for setting in (None, "local"):
        params = BenchParams(
            warmup=0, repeats=1, latency_clips=2, peers=False, ray=setting, busy_cores=0
        )
        measured[setting] = measure(specs, audio, params, {})
        rows[setting] = {
            name: [row.model_dump(exclude={"e2e_ms"}) for row in table]
            for name, table in bench_tables(measured[setting], audio).items()
        }
    assert rows["local"] == rows[None] and len(rows[None]["a16w8"]) == 6
    on_ray = measured["local"]
    assert all("on Ray (ray.init() default, 2 actors, 2 shards)" in text
               for text in on_ray.text_source.values())  # fmt: skip
    assert [len(on_ray.accuracy[name]) for name in ("fp32", "a16w8")] == [4, 4]
    assert all(s.decoder_ms == () and s.e2e_ms > 0 for s in on_ray.accuracy["a16w8"])
    assert all(s.decoder_ms for s in on_ray.latency["a16w8"])  # timed here, as without Ray
    assert np.isfinite([s.e2e_ms for s in on_ray.latency["fp32"]]).all()
