from pathlib import Path

import pytest
import yaml

from pipeline.config import BuiltinSet, PiperVoice, load_params
from whisper_npu.errors import UserError
from whisper_npu.variants import Variant

REPO = Path(__file__).resolve().parent.parent


def write_params(tmp_path: Path, mutate) -> Path:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    mutate(raw)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_shipped_params_are_valid_and_typed():
    params = load_params(REPO / "params.yaml")
    assert params.model.source == "builtin:tiny.en"
    assert isinstance(params.data.calibration, BuiltinSet)
    assert all(isinstance(v, PiperVoice) for v in params.data.voices)
    assert params.quantize.npu_form == [Variant.A16W8]


def test_the_x2_int_form_is_chosen_per_integer_variant(tmp_path: Path) -> None:
    path = write_params(tmp_path, lambda p: p["quantize"].update(npu_form=["a16w8", "xint8"]))
    assert load_params(path).quantize.npu_form == [Variant.A16W8, Variant.XINT8]
    path = write_params(tmp_path, lambda p: p["quantize"].update(npu_form=[]))
    assert load_params(path).quantize.npu_form == []


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda p: p["model"].update(revison="main"), "unknown key 'model.revison'"),
        (lambda p: p.update(extra={}), "unknown key 'extra'"),
        (lambda p: p["data"]["calibration"].update(limit="lots"), "data.calibration.builtin.limit"),
        (lambda p: p["data"]["calibration"].update(limit=0), "greater than 0"),
        (lambda p: p["data"]["eval"].update(kind="youtube"), "'builtin', 'audiofolder', 'hub'"),
        (lambda p: p["data"].update(voices=[]), "data.voices"),
        (lambda p: p["data"]["voices"].append({"engine": "festival"}), "'piper', 'espeak-ng'"),
        (lambda p: p["data"].pop("eval"), "data.eval: Field required"),
        (lambda p: p["export"].update(max_decode_len=500), "export.max_decode_len"),
        (lambda p: p["export"]["parity"].update(logits_atol=-1), "export.parity.logits_atol"),
        (lambda p: p["quantize"].update(npu_form=["bf16"]), "not an integer variant"),
        (lambda p: p["quantize"].update(npu_form=["fp32"]), "quantize.npu_form.0"),
        (lambda p: p["bench"].update(ray="head"), "bench.ray: Value error, not a Ray address"),
        (lambda p: p["bench"].update(ray="ray://head:99999"), "not a Ray address"),
        (lambda p: p["bench"].update(ray="http://head:10001"), "not a Ray address"),
        (lambda p: p["bench"].update(ray_timeout_s=0), "bench.ray_timeout_s: Input should be gr"),
    ],
)
def test_bad_values_name_the_key_in_one_line(tmp_path, mutate, expected):
    with pytest.raises(UserError) as caught:
        load_params(write_params(tmp_path, mutate))
    message = str(caught.value)
    assert expected in message
    assert "\n" not in message


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(UserError, match="no such params file"):
        load_params(tmp_path / "nope.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("model: [unclosed\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_params(broken)
    listed = tmp_path / "list.yaml"
    listed.write_text("- 1\n- 2\n")
    with pytest.raises(UserError, match="mapping"):
        load_params(listed)


@pytest.mark.parametrize("address", ["local", "auto", "ray://head:10001", "10.0.0.1:6379"])
def test_well_formed_ray_addresses_are_taken(tmp_path, address):
    bench = load_params(write_params(tmp_path, lambda p: p["bench"].update(ray=address))).bench
    assert bench.ray == address and bench.ray_address == ("" if address == "local" else address)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("bench:\n  warmup: 1\n  repeats: 2\n  warmup: 3\n", "'warmup' (line 4)"),
        ("gate: {min_qoi: 0.5}\ngate: {min_qoi: 0.9}\n", "'gate' (line 2)"),
        ("data:\n  voices:\n    - {engine: piper, engine: espeak-ng}\n", "'engine' (line 3)"),
    ],
)
def test_a_key_given_twice_is_refused_in_one_line(tmp_path, text, key):
    """YAML keeps the last copy silently: an edit to the first would change nothing."""
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(UserError) as caught:
        load_params(path)
    assert f"duplicate key {key}" in str(caught.value) and "\n" not in str(caught.value)
