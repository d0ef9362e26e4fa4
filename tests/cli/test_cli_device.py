"""One device check (revzoo.check_device) for `generate --device`, `bench --device` and `revzoo.load(device=)`."""

from __future__ import annotations

import re

import pytest
import torch

import revzoo
from revzoo.bench import _bench
from revzoo.cli import main


@pytest.mark.parametrize("device, message", [
    ("cpux", "device 'cpux' is not a device; use cpu, cuda[:N], mps[:N] or xpu[:N]"),
    ("cuda:-1", "device 'cuda:-1' is not a device"),
    ("meta", "device 'meta': the meta device holds no data"),
    ("hpu", "device 'hpu' is not a device revzoo runs on here"),
])
def test_a_device_torch_cannot_use_here_is_a_config_error(device: str, message: str) -> None:
    with pytest.raises(revzoo.ConfigError, match=f"^{re.escape(message)}"):
        revzoo.check_device(device)


def test_a_missing_gpu_or_index_names_the_option_and_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    assert revzoo.check_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(revzoo.ConfigError, match=r"^--device 'cuda': CUDA is not available on this machine \(torch "
                                                 r".*\); use --device cpu, or run on a machine with a CUDA device$"):
        revzoo.check_device("cuda", option="--device")
    with pytest.raises(revzoo.ConfigError, match=r"; use device='cpu', or"):
        revzoo.check_device(torch.device("cuda", 0))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert revzoo.check_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(revzoo.ConfigError, match=r"^device 'cuda:2': this machine has 2 CUDA device\(s\); use cuda:0 to "
                                                 "cuda:1$"):
        revzoo.check_device("cuda:2")
    with pytest.raises(revzoo.ConfigError, match="'mps' is not a device revzoo runs on here; use cpu or cuda"):
        revzoo.check_device("mps", kinds=("cpu", "cuda"))


def test_load_checks_the_device_before_reading_the_file(tmp_path) -> None:
    with pytest.raises(revzoo.ConfigError, match="device 'cpux' is not a device"):
        revzoo.load(tmp_path / "absent.safetensors", device="cpux")  # not "no such file"


@pytest.mark.parametrize("device", ["cpux", "meta", "tpu", "cuda:99"])
def test_bench_and_generate_refuse_a_device_with_the_same_check(device: str, register_plugin, tmp_path, capsys) -> None:
    import revzoo_dalle

    register_plugin(revzoo_dalle, name="dalle-test")
    errors = []
    for argv in (["bench", "--device", device, "--quick"], ["generate", str(tmp_path / "m.safetensors"), "a cat",
                                                            "--device", device]):
        assert main(argv) == 2
        errors.append(capsys.readouterr().err)
    with pytest.raises(revzoo.ConfigError) as refused:  # the one check, as bench calls it
        _bench._setting(device, None)
    assert errors[0] == f"revzoo: error: {refused.value}\n"
    assert errors[1].split(";")[0] == errors[0].split(";")[0]  # generate's lists more device kinds after the ';'
