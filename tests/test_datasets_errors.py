"""Bad input raises DatasetError (a ValueError) naming the file, the frame and what to do."""

import numpy as np
import pytest
from ase import Atoms

from equitensor.datasets import DatasetError, ExtXYZReader, S2EFReader, frame_labels, open_dataset
from equitensor.datasets.frames import attach_labels
from equitensor.datasets.oc20 import write_s2ef

HEADER = 'Lattice="5 0 0 0 5 0 0 0 5" Properties=species:S:1:pos:R:3:forces:R:3 energy={e} pbc="T T T"'


def good_frame(energy=-1.0):
    return "\n".join(["2", HEADER.format(e=energy), "Cu 0 0 0 0.1 0 0", "Cu 1.8 0 0 -0.1 0 0"]) + "\n"


def write(tmp_path, text, name="bad.extxyz"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_good_file_reads(tmp_path):
    reader = ExtXYZReader(write(tmp_path, good_frame() + good_frame(-2.0)))
    assert len(reader) == 2 and frame_labels(reader[1])["energy"] == -2.0


def test_malformed_atom_line(tmp_path):
    path = write(tmp_path, good_frame() + good_frame().replace("-0.1 0 0", "-0.1 zero 0"))
    reader = ExtXYZReader(path)
    reader[0]
    with pytest.raises(DatasetError, match=r"bad\.extxyz, frame 1: malformed extxyz frame"):
        reader[1]


def test_wrong_atom_count(tmp_path):
    with pytest.raises(DatasetError, match=r"frame 2: line 8 should hold the atom count.*reads .Cu 1.8"):
        len(ExtXYZReader(write(tmp_path, good_frame() + good_frame().replace("2\n", "1\n", 1))))
    with pytest.raises(DatasetError, match=r"frame 0: frame declares 5 atoms.*truncated"):
        len(ExtXYZReader(write(tmp_path, good_frame().replace("2\n", "5\n", 1), "trunc.extxyz")))


def test_missing_energy_and_forces(tmp_path):
    no_energy = good_frame().replace(" energy=-1.0", "")
    with pytest.raises(DatasetError, match=r"frame 0: label 'energy' is missing.*energy_key"):
        ExtXYZReader(write(tmp_path, no_energy))[0]
    no_forces = "\n".join(["1", 'Properties=species:S:1:pos:R:3 energy=1.0 pbc="F F F"', "H 0 0 0"]) + "\n"
    with pytest.raises(DatasetError, match="label 'forces' is missing"):
        ExtXYZReader(write(tmp_path, no_forces, "nof.extxyz"))[0]
    assert len(ExtXYZReader(tmp_path / "nof.extxyz", require=("energy",))[0]) == 1


def test_nan_coordinates(tmp_path):
    path = write(tmp_path, good_frame() + good_frame().replace("Cu 1.8 0 0", "Cu nan 0 0"))
    with pytest.raises(DatasetError, match=r"frame 1: position of atom 1 is not finite"):
        ExtXYZReader(path)[1]
    path = write(tmp_path, good_frame().replace("0.1 0 0", "inf 0 0", 1), "inf.extxyz")
    with pytest.raises(DatasetError, match="label 'forces' is not finite"):
        ExtXYZReader(path)[0]


def test_zero_atom_frame(tmp_path):
    empty = "0\n" + HEADER.replace(":forces:R:3", "").format(e=0.0) + "\n"
    reader = ExtXYZReader(write(tmp_path, good_frame() + empty + good_frame()))
    assert len(reader) == 3  # never silently skipped
    with pytest.raises(DatasetError, match="frame 1: frame has zero atoms"):
        reader[1]


def test_unreadable_lmdb(tmp_path):
    path = write(tmp_path, "this is not an lmdb file" * 100, "broken.lmdb")
    with pytest.raises(DatasetError, match=r"broken\.lmdb: cannot open as LMDB"):
        open_dataset(path, allow_pickle=True)


def test_s2ef_txt_out_of_sync(tmp_path):
    atoms = Atoms("Cu2", positions=[[0, 0, 0], [1.8, 0, 0]], cell=np.eye(3) * 5, pbc=True)
    attach_labels(atoms, energy=-1.0, forces=np.zeros((2, 3)))
    write_s2ef([atoms, atoms], tmp_path / "s2ef")
    with open(tmp_path / "s2ef" / "0.txt", "a") as fh:
        fh.write("random1,frame5,0.5\n")
    reader = S2EFReader(tmp_path / "s2ef")
    with pytest.raises(DatasetError, match="holds 2 frames but 0.txt describes 3"):
        reader[0]
    (tmp_path / "s2ef" / "0.txt").write_text("random1,frame0,0.5\nrubbish\n")
    with pytest.raises(DatasetError, match="0.txt, frame 1: line 2 is not"):
        S2EFReader(tmp_path / "s2ef")


def test_is_a_value_error():
    assert issubclass(DatasetError, ValueError)


def test_skip_invalid_leaves_out_bad_frames_and_reports(tmp_path, capsys):
    from equitensor.train.config import ConfigError, DataConfig
    from equitensor.train.setup import prepare_data

    frames = [good_frame(-1.0 - 0.1 * k) for k in range(8)]
    frames[2] = frames[2].replace("Cu 1.8 0 0", "Cu nan 0 0")  # non-finite position
    frames[5] = frames[5].replace("0.1 0 0", "inf 0 0", 1)  # non-finite force
    train = write(tmp_path, "".join(frames), "train.extxyz")
    val = write(tmp_path, good_frame() + good_frame(-3.0), "val.extxyz")
    with pytest.raises(DatasetError, match="frame 2"):  # default: the first bad frame stops
        splits = prepare_data(DataConfig(train=str(train), val=str(val), cache_graphs=False), r_max=3.0, seed=0)
        [splits.train[i] for i in range(len(splits.train))]
    splits = prepare_data(DataConfig(train=str(train), val=str(val), skip_invalid=True), r_max=3.0, seed=0)
    assert len(splits.train) == 6 and len(splits.val) == 2
    energies = sorted(round(float(splits.train[i].energy), 6) for i in range(6))
    assert energies == sorted(round(-1.0 - 0.1 * k, 6) for k in (0, 1, 3, 4, 6, 7))
    out = capsys.readouterr().out
    assert "data.train: skipped 2 of 8 frames" in out and "frame 2" in out and "frame 5" in out
    every_bad = write(tmp_path, frames[2] + frames[5], "bad_only.extxyz")
    with pytest.raises(ConfigError, match="all 2 frames .* fail validation"):
        prepare_data(DataConfig(train=str(every_bad), val=str(val), skip_invalid=True), r_max=3.0, seed=0)
