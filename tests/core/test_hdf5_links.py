"""HDF5 files whose voxels live in other files (NeXus master files, virtual datasets, external raw data).

QA (files as beamlines write them): a master file copied without its data file said it held "0 datasets";
a virtual dataset with a missing source read that part as zeros without a word; external raw data named
relative to the file was "truncated or damaged" when read from another working folder.
"""

import h5py
import numpy as np
import pytest

from napari_xrayseg.core.errors import InputError
from napari_xrayseg.core.io import open_volume, read_block


@pytest.fixture
def vol():
    return np.random.default_rng(1376).random((4, 8, 8), dtype=np.float32)


def test_a_master_file_without_its_data_file_names_the_link(tmp_path):
    with h5py.File(tmp_path / "master.nxs", "w") as f:
        f["entry/data/data"] = h5py.ExternalLink("recon_000001.h5", "/data")
    with pytest.raises(InputError, match=r"links to data it cannot open \(entry/data/data -> recon_000001.h5:/data\)"):
        open_volume(tmp_path / "master.nxs")


def test_a_virtual_dataset_reads_its_sources_beside_it_and_refuses_a_missing_one(tmp_path, vol, monkeypatch):
    with h5py.File(tmp_path / "a.h5", "w") as f:
        f["a"] = vol[:2]
    with h5py.File(tmp_path / "b.h5", "w") as f:
        f["b"] = vol[2:]
    lay = h5py.VirtualLayout(shape=vol.shape, dtype=vol.dtype)
    lay[:2] = h5py.VirtualSource("a.h5", "a", shape=(2, 8, 8))
    lay[2:] = h5py.VirtualSource("b.h5", "b", shape=(2, 8, 8))
    with h5py.File(tmp_path / "virtual.h5", "w") as f:
        f.create_virtual_dataset("data", lay, fillvalue=0)
    monkeypatch.chdir(tmp_path.parent)  # read from another folder
    np.testing.assert_array_equal(read_block(open_volume(tmp_path / "virtual.h5"), ...), vol)
    (tmp_path / "a.h5").unlink()
    with pytest.raises(InputError, match=r"virtual.h5:/data reads its voxels from a.h5, which is missing"):
        open_volume(tmp_path / "virtual.h5")


def test_external_raw_data_is_read_beside_the_file_from_any_folder(tmp_path, vol, monkeypatch):
    vol.tofile(tmp_path / "raw.bin")
    with h5py.File(tmp_path / "ext.h5", "w") as f:
        f.create_dataset("data", shape=vol.shape, dtype=vol.dtype, external=[("raw.bin", 0, vol.nbytes)])
    monkeypatch.chdir(tmp_path.parent)
    np.testing.assert_array_equal(read_block(open_volume(tmp_path / "ext.h5"), ...), vol)
    (tmp_path / "raw.bin").unlink()
    with pytest.raises(InputError, match=r"ext.h5:/data reads its voxels from raw.bin, which is missing"):
        open_volume(tmp_path / "ext.h5")


def test_a_virtual_dataset_with_absolute_sources_copied_beside_it_reads(tmp_path, vol):
    """Review: a beamline VDS names its sources by absolute paths; copied together with them, HDF5 finds them
    beside the file by name, and the new check refused it ("missing: copy them beside")."""
    import shutil

    beam = tmp_path / "beamline"
    beam.mkdir()
    with h5py.File(beam / "part.h5", "w") as f:
        f["a"] = vol
    lay = h5py.VirtualLayout(shape=vol.shape, dtype=vol.dtype)
    lay[:] = h5py.VirtualSource(str(beam / "part.h5"), "a", shape=vol.shape)
    with h5py.File(beam / "master.h5", "w") as f:
        f.create_virtual_dataset("recon", lay, fillvalue=0)
    copied = tmp_path / "copied"
    shutil.copytree(beam, copied)
    shutil.rmtree(beam)
    np.testing.assert_array_equal(read_block(open_volume(copied / "master.h5"), ...), vol)
