"""One formats table and many files as one dataset (folders of shards, globs, lists)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from torch.utils.data import DataLoader

from equitensor.datasets import (
    FORMATS,
    ConcatReader,
    DatasetError,
    GraphDataset,
    detect_format,
    expand_sources,
    frame_labels,
    open_dataset,
    write_ase_db,
    write_extxyz,
)
from equitensor.datasets.convert import OUTPUT_FORMATS, convert, output_format
from equitensor.datasets.formats import format_for_file

from .conftest_data import shared


def emt_frames(n: int, seed: int = 0, with_stress: bool = False) -> list:
    """Rattled Cu/Au fcc cells of 4 to 32 atoms with EMT labels (sizes vary, as OC20's do)."""
    rng = np.random.default_rng(seed)
    frames = []
    for k in range(n):
        reps = [(1, 1, 1), (2, 1, 1), (2, 2, 1), (2, 2, 2)][k % 4]
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(reps)
        atoms.numbers[rng.random(len(atoms)) < 0.3] = 79
        atoms.positions += 0.1 * rng.standard_normal(atoms.positions.shape)
        atoms.calc = EMT()
        results = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces()}
        if with_stress:
            results["stress"] = atoms.get_stress(voigt=False)
        atoms.calc = SinglePointCalculator(atoms, **results)
        atoms.info["sid"] = k
        frames.append(atoms)
    return frames


def write_shards(folder, frames, n_shards: int) -> list:
    folder.mkdir()
    paths = []
    for k, chunk in enumerate(np.array_split(np.arange(len(frames)), n_shards)):
        paths.append(folder / f"shard{k}.aselmdb")
        write_ase_db(paths[-1], [frames[i] for i in chunk])
    return paths


@pytest.fixture(scope="module")
def frames():
    return emt_frames(20)


def assert_same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x.numbers, y.numbers)
        np.testing.assert_allclose(x.positions, y.positions, atol=1e-12)
        lx, ly = frame_labels(x), frame_labels(y)
        assert lx.keys() == ly.keys()
        np.testing.assert_allclose(lx["forces"], ly["forces"], atol=1e-12)
        assert lx["energy"] == pytest.approx(ly["energy"], abs=1e-12)


def test_formats_table_drives_detection_and_output():
    names = [f.name for f in FORMATS]
    assert len(names) == len(set(names))
    for fmt in FORMATS:
        for suffix in fmt.suffixes:
            assert format_for_file(f"x{suffix}") is fmt
            if fmt.writer:
                assert output_format(f"x{suffix}") == fmt.name
    assert set(OUTPUT_FORMATS) == {f.name for f in FORMATS if f.writer}
    assert format_for_file("x.extxyz.xz").name == "extxyz"
    assert format_for_file("x.aselmdb-lock") is None


def test_every_writable_format_round_trips(tmp_path, frames):
    src = tmp_path / "src.extxyz"
    write_extxyz(src, frames[:5])
    for fmt in OUTPUT_FORMATS:
        dst = tmp_path / {"s2ef": "s2ef", "s2ef-xz": "s2efxz", "pyg-lmdb": "x.lmdb", "aselmdb": "x.aselmdb",
                          "asedb": "x.db", "extxyz": "x.extxyz"}[fmt]  # fmt: skip
        assert convert(src, dst, fmt=fmt) == 5
        opts = {"allow_pickle": True} if fmt == "pyg-lmdb" else {}
        read = open_dataset(dst, **opts)
        assert detect_format(dst) == ("s2ef" if fmt == "s2ef-xz" else fmt)
        assert [len(a) for a in read] == [len(a) for a in frames[:5]]


def test_folder_glob_and_list_of_shards_equal_the_single_file(tmp_path, frames):
    paths = write_shards(tmp_path / "shards", frames, 4)
    write_ase_db(tmp_path / "all.aselmdb", frames)
    single = list(open_dataset(tmp_path / "all.aselmdb"))
    for spec in (tmp_path / "shards", str(tmp_path / "shards" / "shard*.aselmdb"), [str(p) for p in paths]):
        reader = open_dataset(spec)
        assert isinstance(reader, ConcatReader) and len(reader) == len(frames)
        assert_same(list(reader), single)
        assert reader[-1].info["sid"] == frames[-1].info["sid"]
        reader.release()  # py-lmdb opens a file once per process: the next spec reopens the shards
    assert detect_format(tmp_path / "shards") == "aselmdb"
    # a list may mix formats; order is kept
    write_extxyz(tmp_path / "extra.extxyz", frames[:3])
    mixed = open_dataset([tmp_path / "extra.extxyz", tmp_path / "shards"])
    assert len(mixed) == 3 + len(frames)
    assert_same(list(mixed), frames[:3] + single)


def test_errors_name_the_shard_and_its_frame(tmp_path, frames):
    bad = [f.copy() for f in frames[:8]]
    for f, g in zip(bad, frames[:8], strict=True):
        f.calc = SinglePointCalculator(f, **frame_labels(g))
    bad[6].calc.results["forces"] = bad[6].calc.results["forces"].copy()
    bad[6].calc.results["forces"][1, 0] = np.nan
    write_shards(tmp_path / "shards", bad, 2)  # frame 6 is frame 2 of shard1
    reader = open_dataset(tmp_path / "shards")
    with pytest.raises(DatasetError, match=r"shard1\.aselmdb, frame 2: .*not finite"):
        reader[6]


def test_bad_specifications(tmp_path, frames):
    with pytest.raises(DatasetError, match="glob matches no file"):
        open_dataset(str(tmp_path / "nothing*.aselmdb"))
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    with pytest.raises(DatasetError, match="folder holds no dataset files"):
        open_dataset(tmp_path / "empty")
    with pytest.raises(DatasetError, match="no dataset path"):
        open_dataset([])
    write_ase_db(tmp_path / "a.aselmdb", frames[:2])
    with pytest.raises(DatasetError, match="named twice"):
        open_dataset([tmp_path / "a.aselmdb", str(tmp_path / "*.aselmdb")])
    write_ase_db(tmp_path / "stress.aselmdb", emt_frames(2, with_stress=True))
    with pytest.raises(
        DatasetError, match=r"stress\.aselmdb: frame 0 has labels \['energy', 'forces', 'stress'\]"
    ):
        open_dataset([tmp_path / "a.aselmdb", tmp_path / "stress.aselmdb"])


def test_corrupt_shard_is_named(tmp_path, frames):
    paths = write_shards(tmp_path / "shards", frames, 4)
    reader = open_dataset(tmp_path / "shards")
    size = paths[2].stat().st_size
    paths[2].write_bytes(b"\0" * size)  # corrupted after the dataset was opened (mid-run)
    reader.release()
    with pytest.raises(DatasetError, match=r"shard2\.aselmdb"):
        reader[11]
    assert len(reader[0]) == len(frames[0])  # the other shards still read


def test_folder_of_trajectories():
    folder = shared("oc20_traj")
    reader = open_dataset(folder)
    files = sorted(folder.glob("*.traj"))
    assert detect_format(folder) == "traj"
    assert len(reader) == sum(len(open_dataset(f)) for f in files)
    last = open_dataset(files[-1])
    np.testing.assert_array_equal(reader[len(reader) - 1].positions, last[len(last) - 1].positions)


def test_shards_in_dataloader_workers(tmp_path, frames):
    write_shards(tmp_path / "shards", frames, 4)
    reader = open_dataset(tmp_path / "shards")
    reader[0]  # opened in the parent before the fork
    dataset = GraphDataset(reader, r_max=4.0)
    loader = DataLoader(dataset, batch_size=None, num_workers=2)
    energies = torch.cat([g.energy for g in loader])
    np.testing.assert_allclose(energies.numpy(), [frame_labels(f)["energy"] for f in frames])


def test_max_open_bounds_open_sources(tmp_path, frames):
    write_shards(tmp_path / "shards", frames, 4)
    reader = ConcatReader([open_dataset(p) for p, _ in expand_sources(tmp_path / "shards")], max_open=2)
    assert_same(list(reader), frames)
    assert sum(r._db is not None for r in reader.readers) == 2


def _train_losses(tmp_path, data_train, *overrides):
    from equitensor.train.config import load_config
    from equitensor.train.setup import prepare_data
    from equitensor.train.trainer import Trainer, seed_everything

    from .train_helpers import PairPotential, save_state_dict

    config = load_config(
        None,
        [f"data.train={data_train}", "train.batch_size=4", "train.epochs=2", "train.dtype=float64",
         f"train.out_dir={tmp_path}", "train.progress=never", "train.plot=false", "optim.scheduler=constant",
         *overrides],
    )  # fmt: skip
    splits = prepare_data(config.data, 4.0, config.train.seed)
    seed_everything(config.train.seed)
    trainer = Trainer(config, PairPotential(), splits.train, splits.val, save_best=save_state_dict)
    return trainer.fit().step_losses


def test_four_shards_train_exactly_like_the_single_file(tmp_path, frames):
    write_shards(tmp_path / "shards", frames, 4)
    write_ase_db(tmp_path / "all.aselmdb", frames)
    single = _train_losses(tmp_path / "run_single", tmp_path / "all.aselmdb")
    sharded = _train_losses(tmp_path / "run_shards", tmp_path / "shards")
    assert len(single) == 2 * 5 and sharded == single  # 18 train frames, batch 4: 5 steps per epoch


def test_skip_invalid_leaves_out_a_shard_corrupted_mid_run(tmp_path, frames, capsys):
    from equitensor.train.setup import open_graphs, skip_invalid_frames

    paths = write_shards(tmp_path / "shards", frames, 4)
    graphs = open_graphs(str(tmp_path / "shards"), 4.0, {})
    graphs.reader.release()
    paths[1].write_bytes(b"\0" * paths[1].stat().st_size)  # frames 5..9
    with pytest.raises(DatasetError, match=r"shard1\.aselmdb, frame 0"):
        graphs[5]
    kept = skip_invalid_frames(graphs, "data.train", str(tmp_path / "shards"))
    assert list(kept.indices) == [*range(5), *range(10, 20)]
    out = capsys.readouterr().out
    assert "skipped 5 of 20 frames" in out and "shard1.aselmdb" in out


def test_element_check_names_the_shard_and_frame(tmp_path, frames):
    from equitensor.train.config import ConfigError
    from equitensor.train.setup import check_elements, open_graphs

    write_shards(tmp_path / "shards", frames, 4)
    first_au = next(i for i, f in enumerate(frames) if 79 in f.numbers)
    shard, local = divmod(first_au, 5)
    graphs = open_graphs(str(tmp_path / "shards" / "*.aselmdb"), 4.0, {})
    with pytest.raises(ConfigError, match=rf"shard{shard}\.aselmdb, frame {local}: element Au"):
        check_elements(graphs, [29], "data.train")
