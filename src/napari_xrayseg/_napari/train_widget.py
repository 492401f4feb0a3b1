"""Train widget: fit a 2D network to the painted slices of a Labels layer (0 = not annotated).

Console equivalent::

    from napari_xrayseg import train, segment
    model = train(viewer.layers["image"].data, viewer.layers["labels"].data, axis=0, minutes=5,
                  arch="auto", mode="supervised", out="model.safetensors")
    viewer.add_labels(segment(viewer.layers["image"].data, model), name="image labels")

Several pairs ("Add pair", then train) and independent 2D images::

    model = train([viewer.layers["a"].data, viewer.layers["b"].data],
                  [viewer.layers["a labels"].data, viewer.layers["b labels"].data], two_d=True, minutes=5)
"""

from __future__ import annotations

import logging
from collections.abc import Generator
from pathlib import Path
from typing import Any

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    PushButton,
    SpinBox,
)
from napari.utils.notifications import show_info

import napari

from ..core.config import SegmentConfig, TrainConfig
from ..core.device import PRECISIONS, available_devices
from ..core.errors import InputError, OutputExistsError, OutputWriteError, XraysegError, for_gui
from ..core.inference import iter_segment, trained_on
from ..core.models import (
    AUTO_START,
    MAX_CONTEXT,
    PRETRAINED,
    RANDOM_START,
    Model,
    architectures,
    choose_arch,
    default_batch,
    default_context,
    default_size,
    pretrained_path,
    raise_rescued,
    read_model_info,
    save_or_rescue,
)
from ..core.normalize import normalize_of
from ..core.progress import Progress
from ..core.training import LOSSES, MODES, SCHEDULES, iter_train
from ._jobs import JobRunner, JobWidget, show_warning, text_label
from ._layers import (
    channel_axis_of,
    follow_new_annotations,
    label_features,
    labels_snapshot,
    layer_array,
    layer_choices,
    layer_class_names,
    model_labels_warning,
    nodata_field,
    nodata_value,
    placement_mismatch,
    result_base,
    spatial_placement,
    unique_name,
)
from ._recent import model_saved
from ._voxel import layer_voxel_size

_T = TrainConfig()
_S = SegmentConfig()

log = logging.getLogger(__name__)


class TrainingPlot(Container):
    """Live training curves (loss and validation Dice per epoch) in the dock."""

    def __init__(self) -> None:
        super().__init__(labels=False)
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self.figure = Figure(figsize=(4, 2.4), tight_layout=True)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(180)
        self.ax_loss = self.figure.add_subplot(111)
        self.ax_dice = self.ax_loss.twinx()
        self.native.layout().addWidget(self.canvas)
        self.epochs: list[int] = []
        self.loss: list[float] = []
        self.dice: list[float] = []
        self._draw()

    def clear(self) -> None:
        """Forget the curves."""
        self.epochs, self.loss, self.dice = [], [], []
        self._draw()

    def add(self, epoch: int, loss: float, val_dice: float | None) -> None:
        """Append one epoch and redraw."""
        self.epochs.append(epoch)
        self.loss.append(loss)
        self.dice.append(np.nan if val_dice is None else val_dice)
        self._draw()

    def show(self, history: list[dict[str, Any]], title: str = "") -> None:
        """Draw a finished run's curves (a model's ``info.history``), with a title."""
        self.epochs = [int(h["epoch"]) for h in history]
        self.loss = [float(h["loss"]) for h in history]
        self.dice = [np.nan if h.get("val_dice") is None else float(h["val_dice"]) for h in history]
        self._draw(title)

    def _draw(self, title: str = "") -> None:
        from matplotlib.ticker import MaxNLocator

        for ax in (self.ax_loss, self.ax_dice):
            ax.clear()
        self.ax_loss.set_title(title, fontsize="medium")
        self.ax_loss.xaxis.set_major_locator(MaxNLocator(integer=True))  # whole epochs
        few = len(self.epochs) < 2  # a single epoch is a point: give the loss a marker too
        self.ax_loss.plot(
            self.epochs, self.loss, color="tab:orange", marker="o" if few else None, label="training loss"
        )
        self.ax_dice.plot(self.epochs, self.dice, color="tab:blue", marker=".", label="validation Dice")
        if len(self.epochs) < 2:  # matplotlib's default range around 0 or one epoch reads -0.045 .. 0.045
            first = self.epochs[0] if self.epochs else 1
            self.ax_loss.set_xlim(first - 0.5, first + 1.5)
        if not self.epochs:
            self.ax_loss.set_yticks([])
            self.ax_loss.text(
                0.5,
                0.5,
                "curves appear here while training",
                ha="center",
                va="center",
                transform=self.ax_loss.transAxes,
                color="gray",
            )
        self.ax_loss.set_xlabel("epoch")
        self.ax_loss.set_ylabel("loss", color="tab:orange")
        self.ax_dice.set_ylabel("val Dice", color="tab:blue")
        self.ax_dice.set_ylim(0, 1)
        self.ax_dice.yaxis.tick_right()  # clear() forgets that twinx() put this axis on the right
        self.ax_dice.yaxis.set_label_position("right")
        self.canvas.draw_idle()


def _train_and_save(**kw: Any) -> Generator[Progress, None, Model]:
    """:func:`iter_train`; a trained model that cannot be saved at the end goes to a rescue file, named in the error.

    Windows cannot tell an unwritable folder before the work (``os.access`` says yes, no lock file is
    made): the whole training ran, then the widget showed the error and the model was gone (QA).
    """
    try:
        return (yield from iter_train(**kw))
    except (OutputWriteError, OutputExistsError) as e:
        raise_rescued(e, getattr(e, "result", None), kw.get("out"))


def _save_when_closed(model: Model | None, out: Any) -> None:
    """The model so far of a training stopped by closing its dock or napari, saved as Cancel saves it."""
    if model is not None:
        path, why = save_or_rescue(model, out)
        said = (
            f"training stopped as its panel closed; the model so far ({len(model.info.history)} epochs) saved to {path}"
            + (f" ({why})" if why else "")
        )
        log.info("%s", said)
        try:  # napari may be closing too: then the log is all there is
            show_info(said)  # QA h5: a file appeared without a word, and the next run's path was taken
        except Exception:  # noqa: BLE001 - a notification must never lose the save
            log.debug("no notification for the saved model", exc_info=True)


class TrainWidget(JobWidget):
    """Dock widget: train a model from an Image layer and a sparse Labels layer."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=True)
        self._viewer = viewer
        self.model: Model | None = None  # the last trained model
        self._image = ComboBox(label="Image", choices=layer_choices(viewer, napari.layers.Image), nullable=False)
        self._labels = ComboBox(
            label="Labels (0 = unpainted)",
            choices=layer_choices(viewer, napari.layers.Labels, annotations=True),
            nullable=False,
        )
        self._axis = ComboBox(label="Slice axis", choices=[("0 (Z)", 0), ("1 (Y)", 1), ("2 (X)", 2)], value=_T.axis)
        self._arch = ComboBox(
            label="Architecture",
            choices=sorted(architectures()),
            value="unet",
            tooltip="chosen for the image until you pick one (as train(arch='auto')): unet3d, a 3D U-Net "
            "over 15 slices that places interfaces better (docs/train.md), for volumes at least 15 slices "
            "deep and a time budget of at least 5 minutes; unet, a 2.5D U-Net with 3x faster epochs, "
            "for 2D images, thin volumes and shorter budgets",
        )
        self._arch_picked = False  # True once the user picks an architecture: the image no longer decides
        self._choosing = False  # True while _on_image sets the architecture (not the user's pick)
        self._size = ComboBox(
            label="Size",
            choices=list(architectures()["unet"]),
            value=_T.size,
            tooltip="until you pick one, the architecture's default, and for unet3d with 'auto' or "
            "'pretrained' start weights the pretrained start's size (medium): its random-weights "
            "candidate is then the default size (small), as train(size=None) does",
        )
        self._size_picked = False  # True once the user picks a size: it is passed to train as it is
        self._sizing = False  # True while the widget sets the size (not the user's pick)
        self._mode = ComboBox(
            label="Mode",
            choices=list(MODES),
            value=_T.mode,
            tooltip="supervised: segmentation loss on the painted pixels; pix2pix: also an "
            "adversarial loss from a PatchGAN discriminator (slower per step)",
        )
        self._minutes = FloatSpinBox(label="Time budget (min)", min=0.1, max=24 * 60, step=0.5, value=5.0)
        # 0 = no cap: the whole time budget is used (as `xrayseg train --minutes` without --epochs)
        self._epochs = SpinBox(label="Max epochs (0 = no cap)", min=0, max=100_000, value=0)
        self._batch = SpinBox(label="Batch", min=1, max=512, value=default_batch("unet"))
        self._patch = SpinBox(label="Patch size", min=16, max=1024, step=16, value=_T.patch)
        self._lr = FloatSpinBox(label="Learning rate", min=1e-6, max=1.0, step=1e-4, value=_T.lr)
        self._steps = SpinBox(
            label="Steps per epoch",
            min=1,
            max=100_000,
            value=_T.steps_per_epoch,
            tooltip="optimiser steps between validations (xrayseg train --steps)",
        )
        self._seed = SpinBox(
            label="Seed",
            min=0,
            max=2**31 - 1,
            value=_T.seed,
            tooltip="the same seed, data and settings give the same model (with a fixed number of epochs, "
            "reached before the time budget; docs/train.md, 'Reproducible training')",
        )
        self._context = SpinBox(
            label="Context slices",
            min=1,
            max=MAX_CONTEXT,
            step=2,
            value=_T.context,
            tooltip="odd number of slices per input: each slice with its neighbours "
            "along the slice axis as channels (2.5D); 1 = plain 2D",
        )
        self._augment = CheckBox(label="Augmentation", value=_T.augment)
        self._loss = ComboBox(
            label="Loss",
            choices=list(LOSSES),
            value=_T.loss,
            tooltip="dicece: Dice + cross-entropy (the default); ce; dice; dice_gamma (docs/train.md)",
        )
        self._gamma = FloatSpinBox(
            label="Dice gamma",
            min=0.1,
            max=8.0,
            step=0.1,
            value=_T.gamma,
            tooltip="exponent of the Dice denominator of the dice_gamma loss (xrayseg train --gamma)",
        )
        self._gamma.visible = False  # shown with the dice_gamma loss only
        self._loss.changed.connect(lambda v: setattr(self._gamma, "visible", str(v) == "dice_gamma"))
        self._schedule = ComboBox(
            label="Learning-rate schedule", choices=list(SCHEDULES), value=_T.schedule, tooltip="decay over the budget"
        )
        self._precision = ComboBox(
            label="Precision",
            choices=list(PRECISIONS),
            value=_T.precision,
            tooltip="auto: mixed precision on CUDA, bf16 on CPUs with AMX, else fp32 (docs/train.md#precision)",
        )
        self._minutes.tooltip = "training runs until this time is spent (or Max epochs, if that comes first)"
        self._epochs.tooltip = "stop after this many epochs even if time is left; 0: only the time budget counts"
        self._batch.tooltip = "patches per training step: more use more memory"
        self._patch.tooltip = "side of the square patches cut from the painted slices for each step"
        self._lr.tooltip = "step size of the optimiser (Adam); the default suits every architecture here"
        self._augment.tooltip = (
            "random flips, turns, small rotations and scalings, grey-level, noise and blur changes of the patches"
        )
        self._all_axes = CheckBox(
            label="Also learn from the other two axes",
            value=False,
            tooltip="isotropic volumes: painted slices are painted rows of the slices "
            "along the other axes; learn from those too (for orthoplane segmenting)",
        )
        self._device = ComboBox(label="Device", choices=["auto", *available_devices()], value=_T.device)
        self._curves_of: str | None = None  # the candidate start whose curves the plot shows
        self._data_trained: Any = None  # the image layer's data when training started
        self._start_from = ComboBox(
            label="Start weights",
            choices=[AUTO_START, RANDOM_START, PRETRAINED],
            value=AUTO_START,
            tooltip="auto: where it fits (unet3d medium, context 15, one channel and axis), fine-tune the "
            "pretrained unet3d 5 epochs, train from random weights in the rest of the time, keep the one "
            "with the higher validation Dice; random; pretrained: fine-tune the unet3d shipped with the "
            "plugin (trained on synthetic PXCT scans, its classes matched to yours by grey level). "
            "A model file below is fine-tuned instead (with 'auto')",
        )
        self._init = FileEdit(label="Start from model", mode="r", filter="*.safetensors", value="")  # optional
        self._out = FileEdit(label="Save model to", mode="w", filter="*.safetensors", value="")
        self._out.tooltip = "a new .safetensors file (an existing one is never replaced); Cancel also saves here"
        self._segment_after = CheckBox(label="Segment the image when done", value=True)
        self._nodata = nodata_field()
        self._level = CheckBox(
            label="Level slices along z",
            value=False,
            tooltip="map each slice along z onto the volume's typical grey scale first (normalize='slice'): "
            "for scans stitched from several heights or whose grey levels drift along z; the model levels "
            "every volume it segments the same way. Leave off where the material itself changes along z",
        )
        self._pairs: list[tuple[Any, Any]] = []  # more (image, labels) layer pairs to train on
        self._add_pair = PushButton(text="Add pair to training set")
        self._clear_pairs = PushButton(text="Clear training set")
        self._pairs_label = text_label("training set: the pair above")
        self._two_d = CheckBox(
            label="Independent 2D images",
            value=False,
            tooltip="the images are unrelated 2D images (a stack: one per slice), never each other's "
            "context; on by itself for several 2D layers",
        )
        self._channel_axis = ComboBox(
            label="Channel axis",
            choices=["none", "0", "1", "2", "3", "last"],
            value="none",
            tooltip="the image layer's axis that holds channels (phase and absorption stacked, dual "
            "energy, RGB colours: 'last'); each channel is normalised on its own and the model "
            "expects the same channels when it segments",
        )
        self._status = text_label("")
        self.plot = TrainingPlot()
        self._run = PushButton(text="Train")
        self.runner = JobRunner(self._run, "Train")
        self._arch.changed.connect(self._on_arch)
        self._size.changed.connect(self._on_size)
        self._start_from.changed.connect(lambda _: self._show_default_size())
        self._init.changed.connect(lambda _: self._on_start_file())
        self._image.changed.connect(self._on_image)
        self._axis.changed.connect(lambda _: self._on_image(self._image.value))
        self._channel_axis.changed.connect(lambda _: self._on_image(self._image.value))
        self._two_d.changed.connect(lambda _: self._on_image(self._image.value))
        self._minutes.changed.connect(lambda _: self._on_image(self._image.value))
        self._run.changed.connect(self._on_run)
        self._add_pair.changed.connect(self._on_add_pair)
        self._clear_pairs.changed.connect(self._on_clear_pairs)
        self.extend(
            [
                self._image,
                self._labels,
                self._add_pair,
                self._clear_pairs,
                self._pairs_label,
                self._two_d,
                self._channel_axis,
                self._axis,
                self._arch,
                self._size,
                self._mode,
                self._minutes,
                self._epochs,
                self._batch,
                self._patch,
                self._lr,
                self._steps,
                self._seed,
                self._context,
                self._augment,
                self._loss,
                self._gamma,
                self._schedule,
                self._precision,
                self._all_axes,
                self._device,
                self._nodata,
                self._level,
                self._start_from,
                self._init,
                self._out,
                self._segment_after,
                self._status,
                self.plot,
                self._run,
            ]
        )
        self.span(self.plot, self._status)  # the whole width: readable ticks and labels
        self.pin_status(self._status)  # the progress line and Train / Cancel in view in a short window
        self.pin(self._run)
        self._follow_layers(viewer)
        follow_new_annotations(viewer, self._labels, self)  # the layer a user adds to paint on
        self._on_image(self._image.value)

    def _start_file(self) -> Path | None:
        """The model file chosen to start from, or None."""
        init = str(self._init.value)
        return None if init in ("", ".") or not Path(init).is_file() else Path(init)

    def _on_start_file(self) -> None:
        """Until the user picks an architecture, show the start file's network, context and batch.

        The file keeps its network (``arch="auto"``), and its context must be the one trained
        with: the form showed the image's choice (a unet3d of context 15 for a volume) and
        training from a 2.5D file failed on the context it passed.
        """
        path = self._start_file()
        info = None
        if path is not None:
            try:
                info = read_model_info(path)
            except XraysegError:  # a bad file is named when training starts
                return None
            self._level.value = normalize_of(info.normalization) == "slice"  # a levelled model goes on levelling
        if info is None or self._arch_picked:
            return self._on_image(self._image.value)
        if info.arch in architectures():
            self._choosing = True
            try:
                self._arch.value = info.arch
            finally:
                self._choosing = False
        self._context.value = int(info.context)
        return None

    def _normalize(self) -> str:
        """``"slice"`` when levelling is on, else a fixed-bounds start file's ``"fixed"``, else ``"image"``."""
        if self._level.value:
            return "slice"
        path = self._start_file()
        try:
            fixed = path is not None and normalize_of(read_model_info(path).normalization) == "fixed"
        except XraysegError:  # a bad file is named when training starts
            fixed = False
        return "fixed" if fixed else "image"

    def _on_image(self, layer: Any) -> None:
        """Until the user picks an architecture, the one ``train(arch="auto")`` would choose for this image."""
        volume = layer is None or getattr(layer, "ndim", 3) > 2  # a 2D image: no slice axis, no other axes (QA)
        self._axis.visible = self._all_axes.visible = volume
        if self._arch_picked or layer is None or self._start_file() is not None:
            return
        data = getattr(layer, "data", None)
        shape = tuple(getattr(data, "shape", ()))
        channels = str(self._channel_axis.value) != "none" or bool(getattr(layer, "rgb", False))
        axis = int(self._axis.value) if len(shape) == 3 else 0
        arch = choose_arch(
            [shape],
            axis=axis,
            channel_axis=0 if channels else None,
            two_d=self._two_d.value or None,
            minutes=float(self._minutes.value),
        )
        if arch != self._arch.value:
            self._choosing = True
            try:
                self._arch.value = arch
            finally:
                self._choosing = False

    def _on_arch(self, arch: str) -> None:
        """Offer the sizes of the chosen architecture, starting at its default (and its context and batch)."""
        if not self._choosing:
            self._arch_picked = True  # the user's choice: changing the image no longer changes it
        self._size_picked = False
        self._sizing = True
        try:
            self._size.choices = list(architectures()[arch])
        finally:
            self._sizing = False
        self._show_default_size()
        self._context.value = default_context(arch)
        self._batch.value = default_batch(arch)

    def _on_size(self, _: str) -> None:
        if not self._sizing:
            self._size_picked = True

    def _show_default_size(self) -> None:
        """Until the user picks a size, show what ``train(size=None)`` trains (the start's size where it starts)."""
        if self._size_picked:
            return
        arch = str(self._arch.value)
        size = _T.size if arch == "unet" else default_size(arch)
        if arch == "unet3d" and str(self._start_from.value) in (AUTO_START, PRETRAINED):
            try:
                size = read_model_info(pretrained_path()).size or size
            except XraysegError:  # installed without its weights: random weights, the default size
                pass
        self._sizing = True
        try:
            self._size.value = size
        finally:
            self._sizing = False

    # ------------------------------------------------------------------ training set
    def _on_add_pair(self) -> None:
        pair = (self._image.value, self._labels.value)
        if None not in pair and pair not in self._pairs:
            self._pairs.append(pair)
        self._show_pairs()

    def _on_clear_pairs(self) -> None:
        self._pairs = []
        self._show_pairs()

    def _show_pairs(self) -> None:
        names = ", ".join(f"{i.name} + {lab.name}" for i, lab in self._pairs)
        self._pairs_label.value = (
            f"training set: {names} (and the pair above)" if names else "training set: the pair above"
        )

    def _pair_arrays(self) -> tuple[list[Any], list[Any], int | None]:
        """The selected pair first, then the added ones: arrays, shapes checked, labels copied; the channel axis."""
        pairs = [(self._image.value, self._labels.value)]
        pairs += [p for p in self._pairs if p != pairs[0]]
        images, labels, ch = [], [], None
        choice = str(self._channel_axis.value)
        for image_layer, labels_layer in pairs:
            if image_layer not in self._viewer.layers or labels_layer not in self._viewer.layers:
                raise InputError(
                    f"layer {image_layer.name!r} or {labels_layer.name!r} was removed: clear the training set"
                )
            image = layer_array(image_layer, "image", channels=choice != "none")
            ch = channel_axis_of(image_layer, choice, image.ndim)
            spatial = None if ch is None else tuple(n for i, n in enumerate(image.shape) if i != ch)
            images.append(image)
            labels.append(labels_snapshot(labels_layer, image, shape=spatial))
        return images, labels, ch

    # ------------------------------------------------------------------ run
    def _on_run(self) -> None:
        self.runner.toggle(self._inputs, self._start)

    def _start(self, kwargs: dict[str, Any]) -> None:
        self.plot.clear()
        self._curves_of = None
        layer = self._image.value
        self._data_trained = layer.data  # "Segment the image when done" segments this data, not newer data
        self._status.value = "training..."
        total = kwargs["epochs"] if kwargs["minutes"] is None else 1000  # per mille of the time budget
        self.runner.start(
            _train_and_save,
            desc=f"Training on {layer.name}",
            total=total,
            on_returned=lambda m: self._trained(m, layer, kwargs, cancelled=False),
            on_yielded=self._on_progress,
            on_cancelled=lambda e: self._trained(getattr(e, "result", None), layer, kwargs, cancelled=True),
            on_failed=lambda msg: setattr(self._status, "value", f"training failed: {msg}"),
            salvage=lambda e: _save_when_closed(getattr(e, "result", None), kwargs["out"]),
            **kwargs,
        )

    def _inputs(self) -> dict[str, Any]:
        """Validate and snapshot the inputs on the main thread."""
        image_layer = self._image.value
        images, labels_list, ch = self._pair_arrays()
        image = images[0]
        ndim = image.ndim - (ch is not None)  # spatial dimensions
        out = str(self._out.value)
        if out in ("", "."):
            raise InputError("no model path chosen: set 'Save model to' (a new .safetensors file)")
        if not out.endswith(".safetensors"):
            out += ".safetensors"
        if Path(out).exists():
            raise InputError(f"{out} exists: choose a new file name (models are never overwritten silently)")
        if (warning := model_labels_warning(self._labels.value)) is not None:
            show_warning(warning)
        if (warning := placement_mismatch(self._labels.value, image_layer, ch)) is not None:
            show_warning(warning)
        init: str | None = str(self._init.value)
        init = None if init in ("", ".") or Path(init).is_dir() else init  # a cleared FileEdit holds a folder
        start = str(self._start_from.value)
        if init is not None and start != AUTO_START:
            raise InputError(f"both a model file and '{start}' start weights were chosen: choose one")
        init = init or start
        axis = int(self._axis.value) if ndim == 3 else 0
        axes = [axis, *(a for a in range(3) if a != axis)] if self._all_axes.value and ndim == 3 else None
        voxel = layer_voxel_size(image_layer)  # recorded in the model (napari's pixel units: none)
        if voxel and ch is not None and len(voxel[0]) == image.ndim:  # the channel axis has no voxel size
            voxel = (tuple(v for i, v in enumerate(voxel[0]) if i != ch), voxel[1])
        several = len(images) > 1
        return {
            "image": images if several else image,
            "labels": labels_list if several else labels_list[0],
            "two_d": True if self._two_d.value else None,
            "axis": axis,
            "axes": axes,
            # a start file keeps its network: the shown architecture is passed only if the user picked it
            "arch": str(self._arch.value) if self._arch_picked or not Path(init).is_file() else "auto",
            "size": str(self._size.value) if self._size_picked else None,  # None: as train() chooses
            "mode": str(self._mode.value),
            "minutes": float(self._minutes.value),
            "epochs": int(self._epochs.value) or None,
            # the pretrained start is a unet3d: its batch unless the unet3d's was chosen here
            "batch": None if init == PRETRAINED and str(self._arch.value) != "unet3d" else int(self._batch.value),
            "patch": int(self._patch.value),
            "lr": float(self._lr.value),
            "steps_per_epoch": int(self._steps.value),
            "seed": int(self._seed.value),
            "augment": bool(self._augment.value),
            "loss": str(self._loss.value),
            "gamma": float(self._gamma.value),
            "schedule": str(self._schedule.value),
            "precision": str(self._precision.value),
            "context": None if init == PRETRAINED else int(self._context.value),  # the start's own
            "device": str(self._device.value),
            "init": init,
            "channel_axis": ch,
            "voxel_size": voxel[0][-ndim:] if voxel else None,
            "unit": voxel[1] if voxel else None,
            "class_names": layer_class_names(self._labels.value),  # the labels layer's (the sample's truth has them)
            "nodata": nodata_value(self._nodata.value, training=True),
            "normalize": self._normalize(),
            "out": out,
        }

    def _on_progress(self, p: Progress) -> None:
        start = p.info.get("start")  # init="auto": each candidate start gets its own curves
        if start is not None and start != self._curves_of:
            self._curves_of = start
            self.plot.clear()
        if "loss" in p.info:
            self.plot.add(int(p.info["epoch"]), float(p.info["loss"]), p.info.get("val_dice"))
            self._status.value = p.message

    def _trained(self, model: Model | None, layer: Any, kwargs: dict[str, Any], *, cancelled: bool) -> None:
        if model is None:
            show_info("training cancelled before the first epoch finished; nothing was saved")
            self._status.value = "cancelled"
            return
        self.model = model
        if cancelled:  # keep the best model so far; the target path was checked to be new
            try:  # a folder that refuses it: a rescue file (QA: the model was lost; the CLI kept it)
                path, why = save_or_rescue(model, kwargs["out"])
            except XraysegError as e:
                show_warning(f"training cancelled; could not save the model so far: {for_gui(e)}")
                return
            if why is not None:
                show_warning(for_gui(why))
            model_saved(path)
            msg = (
                f"training cancelled after {len(model.info.history)} epochs; the model so far "
                f"({model.info.validation[1]}) saved to {path}"
            )
            self._status.value = msg
            show_info(msg)
            return
        val, which = model.info.validation
        t = model.info.train
        kept = f", kept the {t['start']} start" if t.get("starts") else ""
        if kept:  # the plot showed the last candidate's run: show the kept one's instead
            self.plot.show(model.info.history, f"{t['start']} start (kept)")
        msg = (
            f"trained {len(model.info.history)} epochs, validation Dice "
            f"{'n/a' if val is None else f'{val:.3f}'} ({which}){kept}; saved to {model.path}"
        )
        self._status.value = msg
        show_info(msg)
        if model.path is not None:
            model_saved(model.path)  # Segment and Annotate offer it
        if self._segment_after.value and layer not in self._viewer.layers:
            show_warning(f"the image layer {layer.name!r} was removed during training: not segmented")
        elif self._segment_after.value and layer.data is not self._data_trained:
            show_warning(  # its labels would lie over other data under the layer's name
                f"{layer.name!r} holds other data than it was trained on: not segmented; segment it with the "
                "Segment widget and the saved model"
            )
        elif self._segment_after.value:
            self.runner.after_finish(lambda: self._segment(model, layer, kwargs))

    def _segment(self, model: Model, layer: Any, kwargs: dict[str, Any]) -> None:
        image = kwargs["image"][0] if isinstance(kwargs["image"], list) else kwargs["image"]

        def add(labels: Any) -> None:
            base, removed = result_base(self._viewer, layer)
            if removed:
                show_warning(removed)
            name = unique_name(self._viewer, f"{base} labels")
            self._viewer.add_labels(
                labels,
                name=name,
                features=label_features(dict(zip(model.info.classes, model.info.class_names))),  # Analyze names
                **spatial_placement(layer, kwargs["channel_axis"]),
                metadata={
                    "napari_xrayseg": {
                        "model": str(model.path),
                        "axis": kwargs["axis"],
                        "trained_on": trained_on(model.info, image),  # Evaluate scores the other slices apart
                    }
                },
            )
            show_info(f"segmented {base} into {name!r}")

        self.runner.start(
            iter_segment,
            desc=f"Segmenting {layer.name}",
            total=[n for i, n in enumerate(image.shape) if i != kwargs["channel_axis"]][kwargs["axis"]],
            on_returned=add,
            image=image,
            model=model,
            axis=kwargs["axis"],
            device=kwargs["device"],
            batch=_S.batch,
            overlap=_S.overlap,
            nodata=kwargs["nodata"],
        )
