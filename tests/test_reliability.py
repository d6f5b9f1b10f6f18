"""Nothing lost, nothing run without consent: atomic outputs, the out_dir guard, honest resume,
pickle permission only from the command line, and clear messages for bad files and settings.

Training runs here use the pair potential of ``train_helpers`` (the trainer on its own) or stop
before any data is read; the end-to-end CLI runs under SIGKILL live in ``test_kill_resume.py``.
"""

from __future__ import annotations

import errno
import os
import pickle

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk

from equitensor import atomic
from equitensor.cli import main
from equitensor.datasets.errors import DatasetError
from equitensor.models.io import ModelFileError
from equitensor.train import setup
from equitensor.train.checkpoint import load_checkpoint
from equitensor.train.config import ConfigError, config_from_dict, config_to_dict, load_config

from .train_helpers import PairPotential, emt_graphs


@pytest.fixture(autouse=True)
def _restore_default_dtype():
    previous = torch.get_default_dtype()
    yield
    torch.set_default_dtype(previous)


def _data_must_not_be_read(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("data was read although the run was refused")

    monkeypatch.setattr(setup, "prepare_data", refuse)


def _tiny_mace():
    from equitensor.models import MACE

    return MACE(
        atomic_numbers=[29, 79], r_max=3.0, max_ell=1, hidden_irreps="4x0e+4x1o", correlation=2,
        num_interactions=1, radial_MLP=[8], MLP_irreps="4x0e",
    )  # fmt: skip


# ------------------------------------------------------------------ atomic writes (items 2, 5)
def test_failed_write_keeps_previous_file_and_names_it(tmp_path, monkeypatch):
    target = tmp_path / "metrics.csv"
    target.write_text("old\n")

    def disk_full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", disk_full)
    kept = "metrics.csv: No space left on device.*previous version is kept"
    with pytest.raises(atomic.OutputError, match=kept):
        with atomic.atomic_write(target) as handle:
            handle.write("new\n")
    assert target.read_text() == "old\n"
    assert list(tmp_path.iterdir()) == [target]  # no temporary file left


def test_output_files_get_the_permissions_open_would_give(tmp_path, monkeypatch):
    import os
    import stat

    previous = os.umask(0o022)  # a umask under which open() and mkstemp (0o600) differ
    try:
        monkeypatch.setattr(atomic, "NEW_FILE_MODE", 0o666 & ~atomic._process_umask())
        with open(tmp_path / "reference", "w") as handle:
            handle.write("x")
        expected = stat.S_IMODE(os.stat(tmp_path / "reference").st_mode)
        assert expected == 0o644
        new = tmp_path / "metrics.csv"
        with atomic.atomic_write(new) as handle:
            handle.write("new\n")
        assert stat.S_IMODE(os.stat(new).st_mode) == expected
        os.chmod(new, 0o640)  # a replaced file keeps the mode its owner gave it
        with atomic.atomic_write(new) as handle:
            handle.write("newer\n")
        assert stat.S_IMODE(os.stat(new).st_mode) == 0o640
    finally:
        os.umask(previous)


def test_killed_model_save_keeps_previous_best_model(tmp_path, monkeypatch):
    from equitensor.models import load_model, save_model

    path = tmp_path / "best_model.pt"
    model = _tiny_mace()
    save_model(model, path)
    real_save = torch.save

    def killed_half_way(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        raise KeyboardInterrupt  # the process dies after the bytes went out, before the rename

    monkeypatch.setattr(torch, "save", killed_half_way)
    with pytest.raises(KeyboardInterrupt):
        save_model(_tiny_mace(), path)
    monkeypatch.undo()
    reloaded = load_model(path)
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(reloaded.state_dict()[name], tensor, rtol=0, atol=0)


def test_every_run_output_goes_through_the_atomic_helper(tmp_path, monkeypatch):
    from equitensor.train.trainer import Trainer

    replaced = []
    real_replace = os.replace

    def record_replace(src, dst):
        replaced.append(os.path.basename(dst))
        return real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", record_replace)
    cfg = load_config(
        None, ["train.epochs=1", "train.batch_size=4", f"train.out_dir={tmp_path}", "train.progress=never"]
    )

    def save_state_dict(model, path):
        atomic.save_torch(model.state_dict(), path)

    graphs = emt_graphs(8)
    Trainer(cfg, PairPotential(), graphs[:6], graphs[6:], save_best=save_state_dict).fit()
    on_disk = sorted(p.name for p in tmp_path.iterdir())
    assert on_disk == ["best_model.pt", "checkpoint.pt", "learning_curve.png", "metrics.csv", "train.log"]
    # each file reached its name by an atomic rename, except the append-only log (flushed per line)
    assert set(replaced) == set(on_disk) - {"train.log"}


def test_out_dir_checked_before_data_is_read(tmp_path, monkeypatch, capsys):
    _data_must_not_be_read(monkeypatch)
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    rc = main(["train", "--set", f"train.out_dir={blocker / 'run'}"])
    err = capsys.readouterr().err
    assert rc == 2 and "train.out_dir: cannot write to" in err and "Traceback" not in err


def test_stale_temporaries_are_removed(tmp_path):
    from equitensor.train.rundir import prepare_out_dir

    (tmp_path / "checkpoint.pt.abc123.tmp").write_bytes(b"partial")
    (tmp_path / "notes.txt.tmp").write_text("not ours")
    assert prepare_out_dir(tmp_path, resume=False, overwrite=False) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt.tmp"]


# ------------------------------------------------------------------ out_dir guard (item 3)
def test_new_run_into_a_run_folder_is_refused(tmp_path, monkeypatch, capsys):
    _data_must_not_be_read(monkeypatch)
    (tmp_path / "checkpoint.pt").write_bytes(b"previous run")
    (tmp_path / "metrics.csv").write_text("epoch\n1\n")
    rc = main(["train", "--set", f"train.out_dir={tmp_path}"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "already holds a run (checkpoint.pt, metrics.csv)" in err
    assert "--resume" in err and "--overwrite" in err
    assert (tmp_path / "checkpoint.pt").read_bytes() == b"previous run"


def test_overwrite_removes_the_previous_run_files(tmp_path):
    from equitensor.train.rundir import prepare_out_dir, remove_run_files

    (tmp_path / "metrics.csv").write_text("old")
    (tmp_path / "best_model.pt").write_bytes(b"old")
    replaced = prepare_out_dir(tmp_path, resume=False, overwrite=True)
    assert (tmp_path / "metrics.csv").exists()  # nothing is deleted before the run is ready to write
    remove_run_files(replaced)
    assert list(tmp_path.iterdir()) == []
    rc = main(["train", "--resume", "--overwrite", "--set", f"train.out_dir={tmp_path}"])
    assert rc == 2


# ------------------------------------------------------------------ resume (item 4)
def _pair_run(tmp_path, overrides=()):
    from equitensor.train.trainer import Trainer

    cfg = load_config(
        None,
        ["train.epochs=1", "train.batch_size=4", f"train.out_dir={tmp_path}", "train.progress=never",
         "train.plot=false", "optim.scheduler=cosine", "optim.lr=0.01", *overrides],
    )  # fmt: skip
    graphs = emt_graphs(8)
    return Trainer(cfg, PairPotential(), graphs[:6], graphs[6:])


def test_resume_applies_changed_lr_and_reports_it(tmp_path, capsys):
    _pair_run(tmp_path).fit()
    trainer = _pair_run(tmp_path, ["optim.lr=0.1", "train.epochs=3", "optim.weight_decay=0.001"])
    trainer.load_state(tmp_path / "checkpoint.pt")
    out = capsys.readouterr().out
    report = "optim.lr 0.01 -> 0.1, optim.weight_decay 5e-07 -> 0.001, train.epochs 1 -> 3"
    assert f"resumed with changed settings: {report}" in out
    step = trainer.scheduler.last_epoch
    expected = 0.1 * trainer.scheduler.lr_lambdas[0](step)
    assert trainer.lr == pytest.approx(expected, rel=1e-12) and trainer.lr > 0.01
    assert trainer.optimizer.param_groups[0]["weight_decay"] == 0.001


def test_resume_sets_the_plateau_schedules_lr(tmp_path):
    first = ["optim.scheduler=plateau", "optim.plateau_patience=0", "optim.plateau_factor=0.5"]
    _pair_run(tmp_path, first).fit()
    trainer = _pair_run(tmp_path, ["optim.scheduler=plateau", "optim.plateau_patience=3", "optim.lr=0.05"])
    trainer.load_state(tmp_path / "checkpoint.pt")
    assert trainer.lr == 0.05 and trainer.scheduler.patience == 3 and trainer.scheduler.factor == 0.8


def test_resume_with_same_settings_keeps_the_restored_lr(tmp_path):
    first = _pair_run(tmp_path)
    first.fit()
    again = _pair_run(tmp_path)
    again.load_state(tmp_path / "checkpoint.pt")
    assert again.lr == first.lr


def test_resume_refuses_fixed_settings_before_writing(tmp_path, monkeypatch, capsys):
    _pair_run(tmp_path).fit()
    with pytest.raises(ConfigError, match=r"train.batch_size \(checkpoint 4, now 2\)"):
        _pair_run(tmp_path, ["train.batch_size=2"]).load_state(tmp_path / "checkpoint.pt")
    _data_must_not_be_read(monkeypatch)
    (tmp_path / "config.yaml").write_text("the run's config\n")
    rc = main(["train", "--resume", str(tmp_path / "checkpoint.pt"), "--set", "model.max_ell=2"])
    err = capsys.readouterr().err
    assert rc == 2 and "model.max_ell (checkpoint 3, now 2)" in err and "cannot change" in err
    assert (tmp_path / "config.yaml").read_text() == "the run's config\n"


# ------------------------------------------------------------------ pickle permission (item 1)
class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_pickle_permission_never_comes_from_a_file(tmp_path, monkeypatch, capsys):
    import lmdb

    marker = tmp_path / "payload_ran"
    env = lmdb.open(str(tmp_path / "evil.lmdb"), subdir=False, map_size=1 << 20)
    with env.begin(write=True) as txn:
        txn.put(b"length", pickle.dumps(_Payload(marker)))
    env.close()
    cfg = load_config(None, [f"train.out_dir={tmp_path / 'run'}", f"data.train={tmp_path / 'evil.lmdb'}"])
    saved = config_to_dict(cfg)
    saved["data"]["options"] = {"allow_pickle": True}
    with pytest.raises(ConfigError, match="not accepted from a config, a checkpoint"):
        config_from_dict(saved, where="checkpoint.pt")
    from equitensor.train.trainer import Trainer

    graphs = emt_graphs(4)
    trainer = Trainer(cfg, PairPotential(), graphs[:2], graphs[2:])
    state = trainer.state_dict()
    state["config"] = saved
    checkpoint = tmp_path / "run" / "checkpoint.pt"
    atomic.save_torch({"version": 1, **state}, checkpoint)
    rc = main(["train", "--resume", str(checkpoint)])
    err = capsys.readouterr().err
    assert rc == 2 and "Pass --allow-pickle on the command line" in err
    assert not marker.exists()
    yaml_file = tmp_path / "evil.yaml"
    yaml_file.write_text("data:\n  options: {allow_pickle: true}\n")
    with pytest.raises(ConfigError, match="allow_pickle"):
        load_config(yaml_file)
    # without the flag the reader refuses, and its advice (--allow-pickle on train) is an accepted flag
    with pytest.raises(DatasetError, match="--allow-pickle"):
        setup.open_graphs(str(tmp_path / "evil.lmdb"), 3.0, {})
    assert not marker.exists()
    _data_must_not_be_read(monkeypatch)
    rc = main(["train", "--allow-pickle", "--set", f"train.out_dir={tmp_path / 'run'}"])
    assert rc == 2 and "already holds a run" in capsys.readouterr().err  # the flag itself is accepted
    with pytest.raises(ValueError):  # an explicit permission in the call is honoured: the payload runs
        setup.open_graphs(str(tmp_path / "evil.lmdb"), 3.0, {}, allow_pickle=True)
    assert marker.exists()


def test_data_info_accepts_allow_pickle_for_any_format(tmp_path, capsys):
    from ase.calculators.emt import EMT
    from ase.db import connect

    path = tmp_path / "frames.json"
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    atoms.calc = EMT()
    atoms.get_potential_energy()
    with connect(path) as db:
        db.write(atoms)
    assert main(["data", "info", str(path), "--allow-pickle", "--no-progress"]) == 0


# ------------------------------------------------------------------ unreadable model files (item 6)
@pytest.mark.parametrize("kind", ["empty", "truncated", "text", "directory"])
def test_unreadable_model_and_checkpoint_files_are_named(tmp_path, kind, capsys):
    from equitensor.models import load_model, save_model

    path = tmp_path / "best_model.pt"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        save_model(_tiny_mace(), path)
        path.write_bytes(path.read_bytes()[:300])
    elif kind == "text":
        path.write_text("epoch,step\n1,2\n")
    else:
        path.mkdir()
    expected = {"empty": "is empty", "directory": "is a directory"}.get(kind, "truncated")
    with pytest.raises(ModelFileError, match=expected) as error:
        load_model(path)
    assert str(path) in str(error.value) and "model file is" in str(error.value)
    if kind != "directory":
        with pytest.raises(ModelFileError, match="training checkpoint is"):
            load_checkpoint(path)
    rc = main(["evaluate", "--model", str(path), "--data", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and expected in err and "Traceback" not in err


# ------------------------------------------------------------------ labels and cells (item 7)
def _write_xyz(path, frames_text):
    path.write_text("".join(frames_text))
    return path


GOOD = '2\nLattice="4 0 0 0 4 0 0 0 4" Properties=species:S:1:pos:R:3:forces:R:3 energy=-1.0 pbc="T T T"\n' \
    "Cu 0 0 0 0.1 0 0\nCu 2 0 0 -0.1 0 0\n"  # fmt: skip
BAD_ENERGY = GOOD.replace("energy=-1.0", "energy=abc")
BAD_FORCES = (
    GOOD.replace("forces:R:3", "forces:R:2").replace(" 0.1 0 0\n", " 0.1 0\n").replace(" -0.1 0 0\n", " -0.1 0\n")
)
SINGULAR = GOOD.replace('Lattice="4 0 0 0 4 0 0 0 4"', 'Lattice="4 0 0 4 0 0 0 0 4"')


@pytest.mark.parametrize(
    "bad, reason",
    [(BAD_ENERGY, "labels cannot be read"), (BAD_FORCES, "labels cannot be read"), (SINGULAR, "singular")],
)
def test_bad_labels_and_singular_cells_are_dataset_errors(tmp_path, bad, reason, capsys):
    from equitensor.train.config import DataConfig

    train = _write_xyz(tmp_path / "train.xyz", [GOOD, bad, GOOD])
    val = _write_xyz(tmp_path / "val.xyz", [GOOD])
    with pytest.raises(DatasetError, match=f"train.xyz, frame 1: .*{reason}"):
        splits = setup.prepare_data(DataConfig(train=str(train), val=str(val), cache_graphs=False), 3.0, 0)
        [splits.train[i] for i in range(len(splits.train))]
    splits = setup.prepare_data(DataConfig(train=str(train), val=str(val), skip_invalid=True), 3.0, 0)
    assert len(splits.train) == 2
    assert "skipped 1 of 3 frames" in capsys.readouterr().out


# ------------------------------------------------------------------ settings before data (item 8)
@pytest.mark.parametrize(
    "setting, message",
    [
        ("model.conv_backend=nope", "unknown tensor-product backend 'nope'"),
        ("model.product_backend=nope", "unknown product-basis backend 'nope'"),
        ("model.hidden_irreps=abc", "cannot parse irreps 'abc'"),
        ("model.hidden_irreps=8x1o", "0e block"),
        ("model.MLP_irreps=4x1o", "MLP_irreps must be even scalars"),
        ("model.correlation=0", "model.correlation must be an integer >= 1"),
        ("model.num_interactions=0", "model.num_interactions must be >= 1"),
        ("model.max_ell=-1", "model.max_ell must be >= 0"),
        ("optim.lr=.inf", "optim.lr must be a finite number"),
        ("optim.min_lr=1", "optim.min_lr=1.0 must be between 0 and optim.lr"),
        ("loss.huber_delta=0", "loss.huber_delta must be > 0"),
        ("model.extra={foo: 1}", "unexpected keyword argument 'foo'"),
    ],
)
def test_model_and_optimiser_settings_checked_before_data(tmp_path, monkeypatch, capsys, setting, message):
    _data_must_not_be_read(monkeypatch)
    rc = main(["train", "--set", setting, f"train.out_dir={tmp_path}"])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and "Traceback" not in err, err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_device_without_cuda_is_reported(tmp_path, monkeypatch, capsys):
    _data_must_not_be_read(monkeypatch)
    assert main(["train", "--set", "train.device=cuda", f"train.out_dir={tmp_path}"]) == 2
    assert "CUDA is not available" in capsys.readouterr().err


def test_r_max_below_every_distance_is_reported(capsys):
    from equitensor.train.config import DataConfig

    graphs = emt_graphs(2, r_max=0.5)
    with pytest.raises(ConfigError, match="model.r_max is too small"):
        setup.compute_statistics(graphs, DataConfig())


# ------------------------------------------------------------------ messages, empty inputs (item 9)
def test_data_commands_print_the_message(tmp_path, capsys):
    bad = _write_xyz(tmp_path / "bad.xyz", ["3\n\nCu 0 0 0\n"])
    convert = ["data", "convert", str(bad), str(tmp_path / "o.xyz")]
    commands = (["data", "info", str(bad), "--no-progress"], convert)
    for command in commands:
        rc = main(command)
        err = capsys.readouterr().err
        assert rc == 2 and "bad.xyz" in err and "Traceback" not in err, err


def test_evaluate_on_an_empty_file_fails_clearly(tmp_path, capsys):
    from equitensor.models import save_model

    save_model(_tiny_mace(), tmp_path / "model.pt")
    (tmp_path / "empty.xyz").write_text("")
    rc = main(["evaluate", "--model", str(tmp_path / "model.pt"), "--data", str(tmp_path / "empty.xyz")])
    err = capsys.readouterr().err
    assert rc == 2 and "holds no frames" in err


def test_empty_training_file_with_validation_set(tmp_path):
    from equitensor.train.config import DataConfig

    (tmp_path / "train.xyz").write_text("")
    val = _write_xyz(tmp_path / "val.xyz", [GOOD])
    with pytest.raises(ConfigError, match="data.train: .*train.xyz holds no frames"):
        setup.prepare_data(DataConfig(train=str(tmp_path / "train.xyz"), val=str(val)), 3.0, 0)


def test_calculator_on_no_atoms_and_on_coincident_atoms():
    from equitensor.models import EquitensorCalculator

    calc = EquitensorCalculator(_tiny_mace())
    with pytest.raises(DatasetError, match="has no atoms"):
        calc.get_potential_energy(Atoms())
    atoms = Atoms("CuAu", positions=[[0, 0, 0], [0, 0, 0]])
    with pytest.raises(DatasetError, match=r"atoms 0 \(Cu\) and 1 \(Au\) are at the same position"):
        calc.get_potential_energy(atoms)


# ------------------------------------------------------------------ coincident atoms (item 10)
@pytest.mark.parametrize("distance", [0.0, 1e-12])
def test_coincident_atoms_in_a_dataset_are_named(tmp_path, distance):
    from equitensor.datasets import GraphDataset, open_dataset

    frame = GOOD.replace("Cu 2 0 0", f"Cu {distance!r} 0 0")
    path = _write_xyz(tmp_path / "dup.xyz", [GOOD, frame])
    graphs = GraphDataset(open_dataset(path), r_max=3.0)
    graphs[0]
    named = r"dup.xyz, frame 1: atoms 0 \(Cu\) and 1 \(Cu\) are at the same position"
    with pytest.raises(DatasetError, match=named):
        graphs[1]


def test_an_atom_on_its_own_periodic_image_is_named():
    from equitensor.datasets.graph import AtomsToGraph

    atoms = Atoms("Cu2", positions=[[0, 0, 0], [4.0, 4.0, 0]], cell=np.eye(3) * 4.0, pbc=True)
    with pytest.raises(DatasetError, match="atoms 0 .* and 1 .* same position"):
        AtomsToGraph(3.0)(atoms)


# ------------------------------------------------------------------ did you mean (item 11)
def test_did_you_mean_matches_the_documented_hint():
    hint = r"unknown config key 'optim.learning_rat'; did you mean 'optim.lr'\?"
    with pytest.raises(ConfigError, match=hint):
        load_config(None, ["optim.learning_rat=0.1"])
    text = open(os.path.join(os.path.dirname(__file__), "..", "docs", "training.md")).read()
    assert "did you mean 'optim.lr'" in text
