"""`xrayseg train` on several pairs, folders of 2D images and list files (issue #18)."""

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile

from napari_xrayseg.cli import main
from napari_xrayseg.core.models import load_model
from napari_xrayseg.core.radiographs import make_radiographs
from napari_xrayseg.core.sample import make_phantom

SMALL = ["--size", "tiny", "--patch", "32", "--batch", "2", "--steps", "2", "--device", "cpu"]


@pytest.fixture
def folders(tmp_path):
    """A folder of radiographs (PNG 8-bit, TIFF 16-bit, JPEG) and a folder of lung masks, one missing."""
    images, labels = make_radiographs(7, side=64, seed=2)
    img, lab = tmp_path / "img", tmp_path / "lab"
    img.mkdir()
    lab.mkdir()
    for i in range(7):
        name = f"cxr{i:02d}"
        if i % 3 == 0:
            iio.imwrite(img / f"{name}.png", images[i])
        elif i % 3 == 1:
            tifffile.imwrite(img / f"{name}.tif", images[i].astype(np.uint16) * 257)
        else:
            iio.imwrite(img / f"{name}.jpg", images[i])
        if i < 6:  # the last image has no label file: not annotated
            iio.imwrite(lab / f"{name}.png", labels[i])
    return img, lab


def test_train_folder_pair_2d(folders, tmp_path, capsys):
    img, lab = folders
    for d in (img, lab):  # what macOS leaves beside each file it copies to another disk: not an image
        (d / "._cxr00.png").write_bytes(b"\x00\x05\x16\x07junk")
    out = tmp_path / "M.safetensors"
    # the form scripts rely on (plus small-network options so the test is quick)
    argv = ["train", "--image", str(img), "--labels", str(lab), "--2d", "--minutes", "0.05", "--out", str(out)]
    assert main([*argv, *SMALL]) == 0
    text = capsys.readouterr().out
    assert "1 of 7 images have no label file" in text and "6 2D images" in text
    m = load_model(out)
    assert m.info.two_d and m.info.context == 1 and m.info.classes == [1, 2]
    assert len(m.info.train["inputs"]) == 6 and m.info.train["validation"] == "slices"
    # a folder is independent 2D images without --2d too
    assert (
        main(
            ["train", "--image", str(img), "--labels", str(lab), "--epochs", "1", "--out", str(tmp_path / "n")] + SMALL
        )
        == 0
    )
    assert load_model(tmp_path / "n.safetensors").info.two_d


def test_train_repeated_pairs_and_list_file(tmp_path, capsys):
    a, ta = make_phantom((6, 64, 64), seed=1, artefacts=False)
    b, tb = make_phantom((4, 48, 72), seed=2, artefacts=False)
    for name, arr in (("a", a), ("b", b)):
        np.save(tmp_path / f"{name}.npy", arr)
    sa, sb = np.zeros_like(ta), np.zeros_like(tb)
    sa[[1, 4]], sb[2] = ta[[1, 4]], tb[2]
    np.save(tmp_path / "la.npy", sa)
    np.save(tmp_path / "lb.npy", sb)
    argv = ["train", "--epochs", "1", *SMALL]
    pairs = ["--image", str(tmp_path / "a.npy"), "--labels", str(tmp_path / "la.npy")]
    pairs += ["--image", str(tmp_path / "b.npy"), "--labels", str(tmp_path / "lb.npy")]
    assert main([*argv, *pairs, "--out", str(tmp_path / "r")]) == 0
    m = load_model(tmp_path / "r.safetensors")
    assert m.info.train["inputs"] == [[6, 64, 64], [4, 48, 72]] and not m.info.two_d
    assert "2 volumes" in capsys.readouterr().out
    # a list file: IMAGE LABELS per line, relative to the list; a line without labels is skipped
    # (saved by Windows Notepad: a byte-order mark first)
    (tmp_path / "pairs.txt").write_text("\ufeff# training set\na.npy\tla.npy\nb.npy lb.npy\n\na.npy\n")
    assert main([*argv, "--image", str(tmp_path / "pairs.txt"), "--out", str(tmp_path / "l")]) == 0
    assert load_model(tmp_path / "l.safetensors").info.train["inputs"] == [[6, 64, 64], [4, 48, 72]]
    # a stack of unrelated images declared 2D
    assert main([*argv, *pairs[:4], "--2d", "--out", str(tmp_path / "s")]) == 0
    assert load_model(tmp_path / "s.safetensors").info.two_d
    # one-line errors
    assert main([*argv, *pairs[:4], "--image", str(tmp_path / "b.npy"), "--out", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err
    assert "2 --image but 1 --labels" in err and "Traceback" not in err


def _colour_folders(tmp_path, n, seed):
    """PNG colour radiographs (tinted: R, G, B differ) and grey lung masks."""
    images, labels = make_radiographs(n, side=64, seed=seed)
    img, lab = tmp_path / "img", tmp_path / "lab"
    img.mkdir()
    lab.mkdir()
    for i in range(n):
        iio.imwrite(img / f"{i}.png", np.stack([images[i], images[i] // 2, 255 - images[i]], -1))
        iio.imwrite(lab / f"{i}.png", labels[i])
    return img, lab


def test_train_rgb_needs_a_declared_conversion(tmp_path, capsys):
    img, lab = _colour_folders(tmp_path, 2, 3)
    argv = ["train", "--image", str(img), "--labels", str(lab), "--epochs", "1", *SMALL]
    assert main([*argv, "--out", str(tmp_path / "a")]) == 2
    assert "--rgb luminance|channels" in capsys.readouterr().err
    assert main([*argv, "--rgb", "luminance", "--out", str(tmp_path / "b")]) == 0
    assert load_model(tmp_path / "b.safetensors").info.two_d


def test_train_rgb_as_channels(tmp_path):
    img, lab = _colour_folders(tmp_path, 3, 4)
    argv = ["train", "--image", str(img), "--labels", str(lab), "--epochs", "1", "--rgb", "channels", *SMALL]
    assert main([*argv, "--out", str(tmp_path / "c")]) == 0
    m = load_model(tmp_path / "c.safetensors")
    assert m.info.two_d and m.info.channels == 3 and m.info.channel_axis == 0
    # and applied to colour files the same way: one file, then the folder
    one = sorted(img.iterdir())[0]
    model = str(tmp_path / "c.safetensors")
    assert main(["predict", "--image", str(one), "--model", model, "--out", str(tmp_path / "one.zarr")]) == 2
    argv = ["predict", "--image", str(one), "--model", model, "--rgb", "channels", "--out", str(tmp_path / "one.zarr")]
    assert main(argv) == 0
    assert (
        main(["predict", "--image", str(img), "--model", model, "--rgb", "channels", "--out", str(tmp_path / "all")])
        == 0
    )
    assert len(list((tmp_path / "all").glob("*.tif"))) == len(list(img.iterdir()))


def test_predict_of_a_multichannel_volume_reports_the_labels_shape(tmp_path, capsys):
    """(Z, C, Y, X) in, (Z, Y, X) labels out: the line says the labels' shape, not the input's."""
    rng = np.random.default_rng(0)
    grey = rng.random((6, 32, 32), dtype=np.float32)
    np.save(tmp_path / "two.npy", np.stack([grey, 1 - grey], axis=1))
    lab = np.zeros((6, 32, 32), np.uint8)
    lab[::2] = (grey[::2] > 0.5) + 1
    np.save(tmp_path / "lab.npy", lab)
    m = str(tmp_path / "m.safetensors")
    argv = ["train", "--image", str(tmp_path / "two.npy"), "--labels", str(tmp_path / "lab.npy"), "--out", m]
    assert main([*argv, "--channel-axis", "1", "--epochs", "1", *SMALL]) == 0
    capsys.readouterr()
    assert main(["predict", "--image", str(tmp_path / "two.npy"), "--model", m, "--out", str(tmp_path / "o.zarr")]) == 0
    assert "wrote labels (6, 32, 32)" in capsys.readouterr().out


def test_predict_rgb_channels_with_a_grey_model_is_refused(tmp_path, capsys):
    """QA: the colour planes went through a one-channel model as a 3-slice volume (labels of shape (3, Y, X))."""
    from napari_xrayseg.core.models import init_model, save_model

    rgb = np.random.default_rng(1203).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    iio.imwrite(tmp_path / "c.png", rgb)
    save_model(init_model("unet", size="tiny", classes=3), tmp_path / "grey.safetensors")
    args = ["predict", "--image", str(tmp_path / "c.png"), "--model", str(tmp_path / "grey.safetensors")]
    assert main([*args, "--rgb", "channels", "--out", str(tmp_path / "o.zarr"), "--device", "cpu"]) == 2
    assert "reads the colour planes as 3 channels but the model takes one" in capsys.readouterr().err
    assert not (tmp_path / "o.zarr").exists()
    assert main([*args, "--rgb", "luminance", "--out", str(tmp_path / "l.zarr"), "--device", "cpu"]) == 0
