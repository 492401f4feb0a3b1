"""The predictor stage of segmentation: network, precision and device; slices in, scores out.

:class:`SlicePredictor` runs a model on batches of normalised 2D slices (with their
context channels): MONAI's sliding-window inferer cuts them into overlapping tiles,
runs them in batches of ``batch`` tiles and blends the scores. It knows nothing of
volumes, slabs or output stores.
"""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import torch

from .config import MODEL_TILE, SegmentConfig
from .device import resolve_device, resolve_precision
from .errors import InputError
from .models import Model, load_model
from .plan import check_window_options
from .progress import CancelToken, check
from .tiling import effective_tile, windows_per_slice

__all__ = ["SlicePredictor", "as_model", "model_digest"]

_D = SegmentConfig()


class SlicePredictor:
    """Runs a model on batches of 2D slices: tiles, blends and picks the best class.

    Parameters
    ----------
    model : Model
        The model (its normalisation must be resolved: ``low``/``high`` not None).
    device : str or torch.device
        Where the network runs.
    tile, overlap, batch, blend, precision
        As in :func:`~napari_xrayseg.segment` (``tile`` is required here).

    Examples
    --------
    >>> from napari_xrayseg import init_model
    >>> pred = SlicePredictor(init_model("unet", size="tiny", classes=3), device="cpu", tile=32)
    >>> pred.labels(np.zeros((2, 32, 32), np.float32)).shape
    (2, 32, 32)
    """

    def __init__(
        self,
        model: Model,
        *,
        device: str | torch.device = _D.device,
        tile: int = MODEL_TILE,
        overlap: float = _D.overlap,
        batch: int = _D.batch,
        blend: str = _D.blend,
        precision: str = _D.precision,
    ) -> None:
        check_window_options(overlap, batch, blend)
        self.model = model
        self.device = resolve_device(device)
        self.precision = resolve_precision(precision, self.device)
        self.net = model.network.to(self.device).eval()
        self.tile, self.overlap, self.batch, self.blend = int(tile), float(overlap), batch, blend
        self.stride = model.info.stride
        effective_tile((self.tile, self.tile), self.tile, self.stride)  # validates tile
        self.lut = np.asarray(model.info.classes, dtype=np.uint8)
        self.volumetric = bool(getattr(self.net, "volumetric", False))
        self.cancel: CancelToken | None = None

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        check(self.cancel)  # once per batch of tiles
        if self.precision == "fp32":
            return self.net(x)
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        with torch.autocast(self.device.type, dtype=dtype):
            return self.net(x).float()

    def scores(self, slices: np.ndarray) -> torch.Tensor:
        """Blended class scores, shape (N, C, Y, X), for normalised slices.

        ``slices`` has shape (N, Y, X) for a model with context 1, or (N, k, Y, X) with
        the k context slices of each slice as channels (see
        :func:`~napari_xrayseg.core.tiling.stack_context`).
        """
        from monai.inferers import sliding_window_inference

        k = self.model.info.in_channels
        if slices.ndim == 3 and k == 1:
            slices = slices[:, None]
        if slices.ndim != 4 or slices.shape[1] != k:
            raise InputError(
                f"the model takes {k} context slice{'s' if k > 1 else ''} per slice; got input "
                f"of shape {tuple(slices.shape)} (expected (N, {k}, Y, X))"
            )
        roi = effective_tile(slices.shape[2:], self.tile, self.stride)
        if self.volumetric and k > 1:
            return self._volume_scores(slices, roi)
        arr = np.ascontiguousarray(slices, dtype=np.float32)
        if not arr.flags.writeable:  # a stack_context view: torch wants a writable buffer
            arr = arr.copy()
        x = torch.from_numpy(arr).to(self.device)
        with torch.inference_mode():
            return sliding_window_inference(
                x,
                roi,
                self.batch,
                self._forward,
                overlap=self.overlap,
                mode=self.blend,
                padding_mode="replicate",
                sw_device=self.device,
                device=self.device,
            )

    def _forward_volume(self, x: torch.Tensor) -> torch.Tensor:
        check(self.cancel)
        if self.precision == "fp32":
            return self.net.forward_volume(x)
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        with torch.autocast(self.device.type, dtype=dtype):
            return self.net.forward_volume(x).float()

    def _volume_scores(self, slices: np.ndarray, roi: tuple[int, int]) -> torch.Tensor:
        """Scores of a 3D network: each run of consecutive slices goes through it as one volume.

        The context stacks of consecutive slices overlap (channel ``j + 1`` of slice ``i`` is
        channel ``j`` of slice ``i + 1``); such a run is the volume ``run + k - 1`` slices deep,
        rebuilt without copies of the stacks, and every slice of it is computed once.
        """
        from monai.inferers import sliding_window_inference

        n, k = slices.shape[:2]
        h = k // 2
        starts = [0] + [i + 1 for i in range(n - 1) if not np.array_equal(slices[i + 1, : k - 1], slices[i, 1:])]
        out = None
        for a, b in zip(starts, [*starts[1:], n]):
            vol = np.concatenate([slices[a, :h], slices[a:b, h], slices[b - 1, h + 1 :]]).astype(np.float32)
            x = torch.from_numpy(vol)[None, None].to(self.device)
            with torch.inference_mode():
                s = sliding_window_inference(
                    x,
                    (vol.shape[0], *roi),
                    1,
                    self._forward_volume,
                    overlap=self.overlap,
                    mode=self.blend,
                    padding_mode="replicate",
                    sw_device=self.device,
                    device=self.device,
                )[0, :, h : h + b - a].transpose(0, 1)
            if out is None:
                out = torch.empty((n, *s.shape[1:]), dtype=s.dtype, device=s.device)
            out[a:b] = s
        assert out is not None
        return out

    def labels(self, slices: np.ndarray) -> np.ndarray:
        """Label values (uint8, shape (N, Y, X)) for normalised slices, as in :meth:`scores`."""
        s = self.scores(slices)
        # A running max over classes: several times faster than argmax over NCHW on CPU.
        best = s[:, 0].clone()
        idx = torch.zeros(best.shape, dtype=torch.uint8, device=s.device)
        for c in range(1, s.shape[1]):
            better = s[:, c] > best
            idx[better] = c
            torch.maximum(best, s[:, c], out=best)
        return self.lut[idx.cpu().numpy()]

    def probs(self, slices: np.ndarray, *, tta: bool = False) -> np.ndarray:
        """Class probabilities (float32, shape (N, C, Y, X)) for normalised slices, as in :meth:`scores`.

        With ``tta``, the average over the slices as given and flipped along each of the
        two in-plane axes (test-time augmentation: 3x the work, smoother confidence).
        """
        p = torch.softmax(self.scores(slices), dim=1)
        if tta:
            for ax in (-1, -2):
                p += torch.softmax(self.scores(np.flip(slices, axis=ax)), dim=1).flip(ax)
            p /= 3
        return p.cpu().numpy()

    def slices_per_call(self, slice_shape: tuple[int, int]) -> int:
        """Slices to run together so about ``batch`` tiles go through the net per call."""
        if self.volumetric:  # a whole slab in one volume: the context halo is computed once per slab
            return 1 << 16
        roi = effective_tile(slice_shape, self.tile, self.stride)
        return max(1, self.batch // windows_per_slice(slice_shape, roi, self.overlap))


def as_model(model: Model | str | os.PathLike, device: torch.device | str = "cpu") -> Model:
    """A :class:`Model` as given, or loaded from a model file path.

    Raises
    ------
    InputError
        If ``model`` is neither.
    """
    if isinstance(model, Model):
        return model
    if isinstance(model, (str, os.PathLike)):
        return load_model(model, device=device)
    raise InputError(f"model must be a Model or a model file path, not {type(model).__name__}")


def model_digest(model: Model) -> str:
    """SHA-256 of a model's architecture and weights (identifies it in outputs, for ``resume``)."""
    h = hashlib.sha256(json.dumps([model.info.arch, model.info.params], sort_keys=True).encode())
    for name, t in sorted(model.network.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()
