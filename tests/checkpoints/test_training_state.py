"""Training-state files beside a model: where import and export put and find them, and bad ones refused clearly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import revzoo
from helpers import FIXTURES as SHARED_FIXTURES
from revzoo.cli import main
from revzoo.testing import isolated_plugins

FIXTURES = SHARED_FIXTURES / "dalle"
SMALL = dict(dim=16, depth=2, heads=2, dim_head=8, num_text_tokens=20, text_seq_len=3, image_size=8,
             vae_num_layers=1, num_image_tokens=8, vae_hidden_dim=4, vae_codebook_dim=4)


pytestmark = pytest.mark.usefixtures("dalle_plugin")


@pytest.fixture
def trained(tmp_path: Path) -> tuple[torch.nn.Module, torch.optim.Optimizer, Path]:
    """A small dalle after one Adam step, saved with its training state beside it."""
    torch.manual_seed(0)
    model = revzoo.create("dalle-rev", **SMALL)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model(torch.tensor([[1, 2, 3]]), torch.zeros(1, 16, dtype=torch.long), return_loss=True).backward()
    optimizer.step()
    path = revzoo.save(model, tmp_path / "m.safetensors")
    revzoo.save_training_state(tmp_path / "m.training.safetensors", model, optimizer, epoch=1)
    return model, optimizer, path


def test_the_state_lives_beside_the_model_under_one_name(tmp_path: Path) -> None:
    from revzoo.checkpoints import training_state_beside

    assert training_state_beside(tmp_path / "m.safetensors") == tmp_path / "m.training.safetensors"
    assert training_state_beside(tmp_path / "m.safetensors.index.json") == tmp_path / "m.training.safetensors"
    assert training_state_beside(tmp_path) == tmp_path / "training.safetensors"


def test_import_of_a_file_without_optimizer_state_writes_none_and_removes_a_stale_one(tmp_path: Path) -> None:
    upstream = torch.load(FIXTURES / "resume.pt", weights_only=True)
    torch.save({key: value for key, value in upstream.items() if key not in ("opt_state", "scheduler_state")},
               tmp_path / "plain.pt")
    revzoo.import_checkpoint("dalle-pytorch", FIXTURES / "resume.pt", tmp_path / "m.safetensors")
    stale = tmp_path / "m.training.safetensors"
    assert stale.is_file()
    with pytest.raises(revzoo.CheckpointError, match="m.safetensors: already exists"):
        revzoo.import_checkpoint("dalle-pytorch", tmp_path / "plain.pt", tmp_path / "m.safetensors")
    (tmp_path / "m.safetensors").unlink()
    with pytest.raises(revzoo.CheckpointError, match="m.training.safetensors: already exists"):
        revzoo.import_checkpoint("dalle-pytorch", tmp_path / "plain.pt", tmp_path / "m.safetensors")
    assert not (tmp_path / "m.safetensors").exists()  # refused before anything was written
    revzoo.import_checkpoint("dalle-pytorch", tmp_path / "plain.pt", tmp_path / "m.safetensors", overwrite=True)
    assert not stale.exists()  # it described the model just replaced
    with pytest.raises(revzoo.CheckpointError, match="holds no optimizer state to write to"):
        revzoo.import_checkpoint("dalle-pytorch", tmp_path / "plain.pt", tmp_path / "n.safetensors",
                                 training_state=tmp_path / "n.state.safetensors")
    assert not (tmp_path / "n.safetensors").exists()


def test_import_to_a_chosen_training_state_path(tmp_path: Path, capsys) -> None:
    assert main(["import", "dalle-pytorch", str(FIXTURES / "resume.pt"), str(tmp_path / "m.safetensors"),
                 "--training-state", str(tmp_path / "opt.safetensors")]) == 0
    assert f"wrote {tmp_path / 'opt.safetensors'} (optimizer state of 32 parameters, epoch 3)" in capsys.readouterr().out
    assert not (tmp_path / "m.training.safetensors").exists()
    assert revzoo.read_training_state(tmp_path / "opt.safetensors").epoch == 3


def test_an_opt_state_that_does_not_fit_is_left_out_with_a_warning(tmp_path: Path, capsys) -> None:
    upstream = torch.load(FIXTURES / "resume.pt", weights_only=True)
    upstream["opt_state"]["param_groups"][0]["params"] = list(range(5))
    torch.save(upstream, tmp_path / "odd.pt")
    assert main(["import", "dalle-pytorch", str(tmp_path / "odd.pt"), str(tmp_path / "m.safetensors")]) == 0
    err = capsys.readouterr().err
    assert err.startswith("revzoo: warning: the checkpoint's opt_state is left out: ") and err.count("\n") == 1
    assert "holds 5 parameters" in err
    assert (tmp_path / "m.safetensors").is_file() and not (tmp_path / "m.training.safetensors").exists()


def test_export_to_a_format_without_a_place_for_it_warns_and_refuses_when_asked(tmp_path: Path, trained,
                                                                                capsys) -> None:
    import revzoo_dalle

    class NoTrainingState:
        @revzoo.hookimpl
        def register_formats(self, register) -> None:
            register(revzoo.CheckpointFormat(name="weights-only", description="dalle-pytorch without opt_state",
                                             read=revzoo_dalle.read_dalle_pytorch, write=revzoo_dalle.write_dalle_pytorch))

    _, _, path = trained
    revzoo.register_plugin(NoTrainingState(), name="weights-only")
    assert main(["export", "weights-only", str(path), str(tmp_path / "w.pt")]) == 0
    assert capsys.readouterr().err == (f"revzoo: warning: {tmp_path / 'm.training.safetensors'} not exported: "
                                       "format 'weights-only' has no place for it\n")
    assert "opt_state" not in torch.load(tmp_path / "w.pt", weights_only=True)
    assert main(["export", "weights-only", str(path), str(tmp_path / "w2.pt"),
                 "--training-state", str(tmp_path / "m.training.safetensors")]) == 2
    assert "cannot export the training state: format 'weights-only' has no place for it" in capsys.readouterr().err
    assert not (tmp_path / "w2.pt").exists()


def test_a_format_cannot_take_training_state_without_export() -> None:
    with pytest.raises(revzoo.PluginError, match="write_training needs write"):
        revzoo.CheckpointFormat(name="odd", description="", read=lambda obj: None, write_training=lambda m, s: {})


def test_a_reader_returning_something_else_as_training_state_is_refused(tmp_path: Path) -> None:
    import revzoo_dalle

    def read(obj, **options):
        imported = revzoo_dalle.read_dalle_pytorch(obj)
        return revzoo.ImportedCheckpoint(imported.architecture, imported.config, imported.form, imported.tensors,
                                         training={"opt_state": 1})

    class Odd:
        @revzoo.hookimpl
        def register_formats(self, register) -> None:
            register(revzoo.CheckpointFormat(name="odd-training", description="", read=read))

    with isolated_plugins():
        revzoo.register_plugin(revzoo_dalle, name="dalle-again")
        revzoo.register_plugin(Odd(), name="odd")
        with pytest.raises(revzoo.CheckpointError, match="and a TrainingState or None"):
            revzoo.import_checkpoint("odd-training", FIXTURES / "resume.pt", tmp_path / "m.safetensors")


def _rewritten(src: Path, dst: Path, tensors: dict | None = None, **metadata: str) -> Path:
    with safe_open(str(src), framework="pt") as handle:
        stored = {key: handle.get_tensor(key) for key in handle.keys()}
        meta = {**handle.metadata(), **{f"revzoo.training.{key}": value for key, value in metadata.items()}}
    save_file(stored if tensors is None else tensors, str(dst), meta)
    return dst


def test_bad_training_state_files_are_refused_naming_them(tmp_path: Path, trained) -> None:
    model, optimizer, _ = trained
    good = tmp_path / "m.training.safetensors"
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[:100])
    foreign = tmp_path / "foreign.safetensors"
    save_file({"x": torch.zeros(1)}, str(foreign))
    first = next(iter(safe_open(str(good), framework="pt").keys()))
    cases = {
        truncated: "not a readable safetensors file",
        foreign: "not a revzoo training-state file",
        _rewritten(good, tmp_path / "json.safetensors", param_groups="[{"): "corrupt training-state metadata",
        _rewritten(good, tmp_path / "deep.safetensors", param_groups="[" * 100_000 + "]" * 100_000):
            "corrupt training-state metadata",
        _rewritten(good, tmp_path / "epoch.safetensors", epoch="-1"): "epoch must be a non-negative integer",
        _rewritten(good, tmp_path / "groups.safetensors", param_groups=json.dumps({"params": 1})):
            "laid out as optimizer.state_dict",
        _rewritten(good, tmp_path / "twice.safetensors", param_groups=json.dumps([{"params": ["a", "a"]}])):
            "name each parameter once",
        _rewritten(good, tmp_path / "key.safetensors", tensors={"noslash": torch.zeros(1)}):
            "is not named PARAMETER/ENTRY",
        _rewritten(good, tmp_path / "stray.safetensors", tensors={"ghost/exp_avg": torch.zeros(1)}):
            "state for parameters no param group holds",
        _rewritten(good, tmp_path / "other.safetensors", param_groups=json.dumps([{"params": [first.split("/")[0]]}]),
                   entries="{}", tensors={first: torch.zeros(1)}): "over other parameters",
    }
    for path, message in cases.items():
        with pytest.raises(revzoo.CheckpointError, match=message) as raised:
            revzoo.load_training_state(path, model, optimizer)
        assert str(raised.value).startswith(str(path)), raised.value


def test_a_scheduler_state_json_cannot_hold_is_refused_before_writing(tmp_path: Path, trained) -> None:
    model, optimizer, _ = trained

    class Scheduler:
        def state_dict(self) -> dict:
            return {"f": object()}

    with pytest.raises(revzoo.CheckpointError, match="scheduler's state holds a value JSON cannot hold"):
        revzoo.save_training_state(tmp_path / "s.safetensors", model, optimizer, Scheduler())
    assert not (tmp_path / "s.safetensors").exists()


def test_load_refuses_an_optimizer_with_other_groups(tmp_path: Path, trained) -> None:
    model, _, _ = trained
    params = [p for p in model.parameters() if p.requires_grad]
    two_groups = torch.optim.Adam([{"params": params[:3]}, {"params": params[3:]}])
    with pytest.raises(revzoo.CheckpointError, match="the saved optimizer has 1 param group"):
        revzoo.load_training_state(tmp_path / "m.training.safetensors", model, two_groups)
    foreign = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))])
    with pytest.raises(revzoo.CheckpointError, match="parameter.s. that are not the model's"):
        revzoo.load_training_state(tmp_path / "m.training.safetensors", model, foreign)


def test_a_vae_export_leaves_its_training_state_out_with_a_warning(tmp_path: Path, capsys) -> None:
    torch.manual_seed(0)
    vae = revzoo.create("discrete-vae", image_size=16, num_layers=2, num_tokens=8, codebook_dim=8, hidden_dim=4)
    path = revzoo.save(vae, tmp_path / "vae.safetensors")
    revzoo.save_training_state(tmp_path / "vae.training.safetensors", vae, torch.optim.Adam(vae.parameters()))
    assert main(["export", "dalle-pytorch", str(path), str(tmp_path / "vae.pt")]) == 0
    assert capsys.readouterr().err == "revzoo: warning: the training state is left out: train_vae.py checkpoints hold none\n"
    assert set(torch.load(tmp_path / "vae.pt", weights_only=True)) == {"hparams", "weights"}


def test_import_writes_the_model_and_its_training_state_together_or_neither(tmp_path: Path, monkeypatch) -> None:
    from safetensors import SafetensorError

    real = revzoo.checkpoints._io.save_file

    def full_disk_for_the_state(tensors, tmp, metadata=None):
        if ".training." in str(tmp):
            raise SafetensorError("Error while serializing: IoError(No space left on device)")
        real(tensors, tmp, metadata)

    monkeypatch.setattr(revzoo.checkpoints._io, "save_file", full_disk_for_the_state)
    with pytest.raises(revzoo.CheckpointError, match=r"m.training.safetensors: cannot write it: .*No space left"):
        revzoo.import_checkpoint("dalle-pytorch", FIXTURES / "resume.pt", tmp_path / "m.safetensors")
    assert sorted(path.name for path in tmp_path.iterdir()) == []


def test_convert_carries_the_training_state_and_preserving_conversion_says_it_cannot(tmp_path: Path, trained,
                                                                                     capsys) -> None:
    model, optimizer, path = trained
    sequential = revzoo.convert(path, tmp_path / "seq.safetensors", "sequential")
    state = tmp_path / "seq.training.safetensors"
    assert state.read_bytes() == (tmp_path / "m.training.safetensors").read_bytes()
    resumed = revzoo.load(sequential)
    fresh = torch.optim.Adam([p for p in resumed.parameters() if p.requires_grad])
    assert revzoo.load_training_state(state, resumed, fresh) == 1  # the names are the same in both forms
    (tmp_path / "m.training.safetensors").unlink()
    revzoo.convert(path, sequential, "sequential", overwrite=True)
    assert not state.exists()  # it belonged to the file replaced
    revzoo.save_training_state(tmp_path / "seq.training.safetensors", resumed, fresh)
    assert main(["convert", str(sequential), str(tmp_path / "pre.safetensors"), "--to", "reversible", "--preserve"]) == 0
    assert capsys.readouterr().err == (f"revzoo: warning: {state} is not carried to {tmp_path / 'pre.safetensors'}: "
                                       "the converted model has new parameters (its adapters); start a new optimizer\n")
    assert not (tmp_path / "pre.training.safetensors").exists()
    (tmp_path / "other.training.safetensors").write_bytes(b"a leftover")
    with pytest.raises(revzoo.CheckpointError, match="other.training.safetensors: already exists"):
        revzoo.convert(sequential, tmp_path / "other.safetensors", "reversible")
    assert not (tmp_path / "other.safetensors").exists()


def test_cli_convert_says_it_carried_the_training_state(tmp_path: Path, trained, capsys) -> None:
    _, _, path = trained
    assert main(["convert", str(path), str(tmp_path / "seq.safetensors"), "--to", "sequential"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"wrote {tmp_path / 'seq.training.safetensors'} (the training state beside {path}, same parameter names)")


def test_an_output_whose_training_state_is_the_input_is_refused_and_the_input_kept(tmp_path: Path, trained,
                                                                                   capsys) -> None:
    model, _, path = trained
    src = tmp_path / "x.training.safetensors"  # a model file whose name is another model's training-state name
    src.write_bytes(path.read_bytes())
    for overwrite in ([], ["--overwrite"]):  # before: refused as existing, then deleted with --overwrite
        assert main(["convert", str(src), str(tmp_path / "x.safetensors"), "--to", "sequential", *overwrite]) == 2
        assert "is the input, and also where the output's training state goes" in capsys.readouterr().err
        assert src.read_bytes() == path.read_bytes() and not (tmp_path / "x.safetensors").exists()
    foreign = tmp_path / "y.training.safetensors"
    foreign.write_bytes((FIXTURES / "resume.pt").read_bytes())
    with pytest.raises(revzoo.CheckpointError, match="is the input, and also where"):
        revzoo.import_checkpoint("dalle-pytorch", foreign, tmp_path / "y.safetensors", overwrite=True)
    assert foreign.read_bytes() == (FIXTURES / "resume.pt").read_bytes()


def test_load_refuses_a_state_another_optimizer_saved_or_one_that_would_fail_the_next_step(tmp_path: Path,
                                                                                           trained) -> None:
    model, adam, _ = trained
    params = [p for p in model.parameters() if p.requires_grad]
    with pytest.raises(revzoo.CheckpointError, match="not SGD's: its param group 0 has .*'betas'.* and lacks .*momentum"):
        revzoo.load_training_state(tmp_path / "m.training.safetensors", model, torch.optim.SGD(params, lr=0.1))
    state = adam.state_dict()
    first = next(index for index, entries in state["state"].items() if entries["exp_avg"].dim() == 2)  # a matrix

    def saved_with(change) -> Path:
        broken = {"state": {k: dict(v) for k, v in state["state"].items()},
                  "param_groups": [dict(g) for g in state["param_groups"]]}
        change(broken)
        fresh = torch.optim.Adam(params, lr=1e-2)
        fresh.load_state_dict(broken)
        path = tmp_path / "broken.training.safetensors"
        revzoo.save_training_state(path, model, fresh)
        return path

    def negative_step(s):
        s["state"][first]["step"] = torch.tensor(-1.0)

    def misshaped(s):
        s["state"][first]["exp_avg"] = s["state"][first]["exp_avg"].t().contiguous()  # the parameter is not square

    for change, message in ((negative_step, "step .* negative"), (misshaped, "has shape")):
        path = saved_with(change)
        with pytest.raises(revzoo.CheckpointError, match=message):
            revzoo.load_training_state(path, model, torch.optim.Adam(params, lr=1e-2))
