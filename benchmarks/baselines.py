"""Classical baselines the U-Net is measured against, from the same sparse annotations.

* :func:`otsu`: three-class multi-Otsu thresholds (unsupervised), grey classes mapped in
  the sample's order pore < YSZ < Ni (labels 1, 3, 2).
* :func:`random_forest_3d`: an ilastik-style pixel classifier, ``sklearn``
  ``RandomForestClassifier`` (100 trees) on 3D features of the whole volume: Gaussian
  smoothing, Laplacian of Gaussian, gradient magnitude, structure-tensor and Hessian
  eigenvalues at sigmas 0.7, 1, 1.6, 3.5 and 5, plus the raw intensity (46 features),
  trained on a class-balanced subsample of the annotated voxels.
"""

from __future__ import annotations

import os
import time

import numpy as np

SIGMAS = (0.7, 1.0, 1.6, 3.5, 5.0)


def otsu(image: np.ndarray, annotations: np.ndarray | None = None) -> np.ndarray:
    """Multi-Otsu thresholds; grey classes -> labels.

    Without ``annotations``: three classes, pore 1, YSZ 3, Ni 2 (the sample's order). With
    them (0 = not annotated): as many classes as they hold, in the order of their mean grey
    levels there, so two- or four-phase scans and other grey orders are thresholded right.
    """
    from napari_xrayseg.core.demo import multi_otsu

    image = np.asarray(image)
    if annotations is None:
        return multi_otsu(image)
    ann = np.asarray(annotations)
    classes = [int(c) for c in np.unique(ann) if c != 0]
    order = tuple(sorted(classes, key=lambda c: float(image[ann == c].mean())))
    return multi_otsu(image, order=order)


def features_3d(volume: np.ndarray, sigmas: tuple[float, ...] = SIGMAS) -> np.ndarray:
    """ilastik-style 3D features of a volume, shape (F, Z, Y, X), float32."""
    import scipy.ndimage as ndi
    from skimage.feature import (
        hessian_matrix,
        hessian_matrix_eigvals,
        structure_tensor,
        structure_tensor_eigenvalues,
    )

    v = np.asarray(volume, np.float32)
    out = [v]
    for s in sigmas:
        out.append(ndi.gaussian_filter(v, s))
        out.append(ndi.gaussian_laplace(v, s))
        out.append(ndi.gaussian_gradient_magnitude(v, s))
        st = structure_tensor(v, sigma=s, order="rc")
        out.extend(structure_tensor_eigenvalues(st).astype(np.float32))
        del st
        hm = hessian_matrix(v, sigma=s, order="rc", use_gaussian_derivatives=False)
        out.extend(hessian_matrix_eigvals(hm).astype(np.float32))
        del hm
    return np.stack(out).astype(np.float32, copy=False)


def random_forest_3d(
    image: np.ndarray, sparse: np.ndarray, seed: int = 0, per_class: int = 20_000, features: np.ndarray | None = None
) -> tuple[np.ndarray, dict[str, float]]:
    """Train a random forest on the annotated voxels' 3D features and predict every voxel.

    Returns the labels and timings (``features_s``, ``fit_s``, ``predict_s``).
    """
    from sklearn.ensemble import RandomForestClassifier

    t0 = time.perf_counter()
    f = features_3d(image) if features is None else features
    feat_s = time.perf_counter() - t0
    nf = f.shape[0]
    flat = f.reshape(nf, -1)
    lab = np.asarray(sparse).reshape(-1)
    rng = np.random.default_rng(seed)
    take = []
    for c in np.unique(lab[lab > 0]):
        where = np.flatnonzero(lab == c)
        take.append(rng.choice(where, min(per_class, where.size), replace=False))
    idx = np.sort(np.concatenate(take))
    rf = RandomForestClassifier(n_estimators=100, min_samples_leaf=2, n_jobs=os.cpu_count(), random_state=seed)
    t0 = time.perf_counter()
    rf.fit(flat[:, idx].T, lab[idx])
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = np.empty(lab.size, np.uint8)
    step = 1 << 18
    for s in range(0, lab.size, step):
        out[s : s + step] = rf.predict(np.ascontiguousarray(flat[:, s : s + step].T))
    pred_s = time.perf_counter() - t0
    return out.reshape(sparse.shape), {"features_s": feat_s, "fit_s": fit_s, "predict_s": pred_s}
