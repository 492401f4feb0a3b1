"""From labels to physics: the microstructure numbers a materials paper reports.

:func:`analyze` measures a 3D label volume (one label value per phase) in physical
units: per phase the volume fraction, the specific surface area, the connectivity
(fraction in the largest cluster, percolation along z, y and x), the mean phase size
and the tortuosity factor along each axis; for three phases the triple-phase-boundary
(TPB) density. :func:`iter_analyze` is the same as a job with progress and a cancel token.

Estimators (see ``docs/analyze.md`` for the known-answer checks):

- **Volume fraction**: voxels of the phase / voxels of the analysed region (less those labelled
  ``outside``; with ``envelope``, less what surrounds a pillar: :func:`sample_envelope`).
- **Specific surface area** ``S_V`` (area of the phase's interfaces with all other
  phases per volume of the region; the faces of the region itself never count).
  ``surface="faces"`` (default) counts the voxel faces between the phase and other
  phases (each face weighted by its physical area, so anisotropic voxels are fine) and
  divides by 3/2: a staircase surface of orientation ``n`` has ``|n_x|+|n_y|+|n_z|``
  times the true area, whose mean over isotropic orientations is 3/2 (the stereological
  correction also used by Wilson et al., Nat. Mater. 5, 541 (2006)). It is unbiased
  for the isotropic interfaces of sintered or random microstructures (spheres: < 1 %
  error on average from radius 5 voxels, up to 3 % for one placement on the grid) but not
  for oriented ones: interfaces whose normals lie in
  one plane (a cylinder's side) come out at 0.85 of the truth, axis-aligned planes at 2/3.
  ``surface="mesh"`` is the area of a marching-cubes surface (scikit-image, Lewiner)
  of the phase mask: an axis-aligned plane gets its area on the cube grid (half a voxel
  short at each edge of the region), curved or oblique interfaces of binary data about
  7-13 % too much.
- **Connectivity**: 6-connected clusters (voxels sharing a face), scipy.ndimage.label.
  ``largest_cluster_fraction`` = voxels of the largest cluster / voxels of the phase;
  the phase *percolates* along an axis when one cluster touches both faces of the
  region normal to that axis.
- **Mean size**: the mean chord (intercept) length: all runs of consecutive phase
  voxels along z, y and x, leaving out runs that touch the region's faces (they are
  cut short), pooled over the three axes (total length / number of chords). For
  isotropic structures this is ``4 V_V / S_V``; for spheres of radius R it is 4R/3,
  for a slab of thickness t it is t.
- **Size distribution** (opt-in): the continuous size distribution of Münch & Holzer (2008),
  the share of the phase covered by inscribed balls of each diameter or larger, from
  Euclidean distance maps, and its median diameter ``d50``.
- **Tortuosity factor** ``tau = eps D / D_eff`` per axis from the steady-state
  diffusion problem in the phase (fixed concentrations on the two faces normal to the
  axis, no flux elsewhere), solved by TauFactor (Kench et al., SoftwareX 2023,
  ``pip install 'napari-xrayseg[physics]'``) on CPU or GPU; ``None`` where the phase
  does not percolate along that axis (or the region is under 3 voxels long along it).
  ``eps`` is the phase's whole volume fraction, dead ends and isolated clusters included
  (TauFactor's convention), so they raise tau. A straight channel has ``tau = 1``.
- **TPB density**: the TPB lines' crossings of the voxel layers normal to z, y and x
  (in each layer, each 8-connected cluster of the voxel edges along its axis where all
  three phases meet, the four voxels around the edge holding all three labels) times
  the layer thickness, divided by 3/2 (a line of direction ``u`` crosses
  ``|u_x|+|u_y|+|u_z|`` times its length in layers, 3/2 on average over isotropic
  directions: the usual correction of edge counting, e.g. Wilson et al. 2006;
  ``tpb_correction=1`` gives the uncorrected length, exact for axis-aligned lines), per
  volume of the region. Counting the edges themselves over-counted by up to 1.5x where
  interfaces meet obliquely (two parallel edges side by side): +18.5 % on a random
  structure, +4.3 % with the crossings (docs/analyze.md).

Memory: fractions, surfaces and TPB are computed slab by slab (slabs of about 32 MB; any
volume size: 0.8 GB at 512³, about 0.9 GB for deep volumes of 384² slices); connectivity and mean size
need the whole region in memory, about 16 bytes per voxel (2.1 GB at 512³), and
tortuosity about 50 bytes per voxel more while TauFactor runs. Regions above
``max_voxels`` (default 512³) raise an error naming the fixes: a sub-volume
(``region=``) or only the slab-wise numbers. On a CPU TauFactor is slow (about 2 s per
solve at 64³, growing with the voxel count times the side length): use a GPU
(``device="auto"``) or a sub-volume for large regions.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import sys
import threading
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from .config import python_numbers
from .errors import InputError
from .io import read_block, volume_chunks, voxel_size_of
from .labels import names_by_label
from .progress import CancelToken, Progress, check, drain
from .units import normalize_unit, parse_voxel_size, pick_voxel_size

__all__ = [
    "AXES",
    "Microstructure",
    "PhaseStats",
    "analyze",
    "compare_microstructure",
    "iter_analyze",
    "microstructure_interval",
    "parse_region",
    "same_shape",
    "sample_envelope",
    "sample_envelope_lazy",
    "tpb_points",
]

log = logging.getLogger(__name__)

#: Axis names in array order.
AXES = ("z", "y", "x")
#: Mean of |u_x| + |u_y| + |u_z| over isotropic directions: staircase over-count of lines and surfaces.
ISOTROPIC_STAIRCASE = 1.5
#: analyze warns when the TPB edges outnumber the layers' crossings by more than this: lines at the voxel scale
#: (measured: 1.0-1.5 on clean structures, 26 on random labels).
TPB_FRAGMENTED = 3.0
#: Largest region (voxels) analysed in memory for connectivity, mean size and tortuosity by default.
MAX_VOXELS = 512**3
#: In :func:`sample_envelope`, pieces of a slice's solid smaller than this share of the largest are debris.
ENVELOPE_DEBRIS = 0.05
#: Without ``envelope``, :func:`analyze` suggests it when one label holds this share of the region's sides.
ENVELOPE_HINT = 0.9
#: Radii of :func:`analyze`'s size distribution (geometric steps).
SIZE_STEPS = 12
_SLAB_BYTES = 32 * 2**20
_MAX_LABEL = 65535
_SMALL_SOLVE = 2**21
_SLOW_CPU_SOLVE = 128**3
_CPU_TAU_S = 55e-9  # seconds per voxel, unit of axis length and phase of a CPU TauFactor solve (QA h5)


# --------------------------------------------------------------------------- results


@dataclass
class PhaseStats:
    """The numbers of one phase (see the module docstring for the estimators).

    Attributes
    ----------
    label : int
        Label value.
    name : str
        Phase name.
    voxels : int
        Voxels of the phase in the region.
    volume_fraction : float
        Voxels of the phase / voxels of the region.
    specific_surface_area : float
        Interface area with the other phases per volume of the region (1 / unit).
    largest_cluster_fraction : float or None
        Fraction of the phase in its largest 6-connected cluster (None: not computed).
    percolates : dict or None
        ``{"z": bool, "y": bool, "x": bool}``.
    tortuosity : dict or None
        Tortuosity factor per axis, ``None`` where the phase does not percolate.
    mean_size : float or None
        Mean chord length (unit); None when the phase has no chord inside the region.
    size_distribution : dict or None
        The continuous size distribution (``analyze(size_distribution=True)``):
        ``{"diameter": [...], "cumulative": [...], "d50": float or None}``, the share of the
        phase that balls of each diameter (unit) fit in and cover, and the diameter where it
        falls to one half (None: not computed).
    """

    label: int
    name: str
    voxels: int
    volume_fraction: float
    specific_surface_area: float
    largest_cluster_fraction: float | None = None
    percolates: dict[str, bool] | None = None
    tortuosity: dict[str, float | None] | None = None
    mean_size: float | None = None
    size_distribution: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON form of the phase.

        Returns
        -------
        dict
            ``name``, ``voxels``, ``volume_fraction``, ``specific_surface_area``,
            ``largest_cluster_fraction``, ``percolates``, ``tortuosity``, ``mean_size``,
            ``size_distribution``.
        """
        return {
            "name": self.name,
            "voxels": self.voxels,  # from_dict reads it back (it came back as 0)
            "volume_fraction": self.volume_fraction,
            "specific_surface_area": self.specific_surface_area,
            "largest_cluster_fraction": self.largest_cluster_fraction,
            "percolates": None if self.percolates is None else dict(self.percolates),
            "tortuosity": None if self.tortuosity is None else dict(self.tortuosity),
            "mean_size": self.mean_size,
            "size_distribution": None if self.size_distribution is None else dict(self.size_distribution),
        }


@dataclass
class Microstructure:
    """Result of :func:`analyze`.

    Attributes
    ----------
    voxel_size : tuple of float
        (z, y, x) voxel size in ``unit``.
    unit : str
        Length unit (``"um"``, ``"nm"``, ... or ``"voxel"``); areas are unit², volumes unit³.
    shape : tuple of int
        Shape of the analysed region.
    region : tuple of (int, int)
        (start, stop) per axis of the analysed region in the input volume.
    phases : dict
        ``{label: PhaseStats}``.
    tpb_density : float or None
        TPB length per volume (unit⁻²), three-phase data only.
    tpb_phases : tuple of int or None
        The three phases of the TPB.
    tpb_edges : int or None
        Raw number of TPB voxel edges.
    methods : dict
        Estimator and parameter of each quantity.
    sample_voxels : int or None
        Voxels of the sample when some of the region was outside it (``outside``,
        ``envelope``); None when all of it is sample.
    profiles : dict
        Phase fractions slice by slice along each axis: ``{"z": {"position": [...],
        "sample_voxels": [...], "fractions": {label: [...]}, "tpb_density": [...]}, "y": ...,
        "x": ...}`` (``tpb_density`` with three phases: each axis's TPB crossings spread over
        the slices as its TPB edges lie, by their midpoints, per sample volume of the slice);
        ``position`` is each slice's centre in ``unit`` (volume coordinates), a fraction is
        NaN where the slice holds no sample. A graded electrode, a layer or a drift along an
        axis shows here (see :meth:`profile_rows`).
    provenance : dict, optional
        When, by which software and command, from which file the numbers were made
        (:func:`~napari_xrayseg.core.provenance.provenance`; input ``labels``).
    section : dict or None
        For a 2D section (``shape`` and ``voxel_size`` (y, x); the numbers are stereological
        estimates for an isotropic structure, ``methods["section"]``): the section's own measures,
        ``{"boundary_length_per_area": {label: L_A (1/unit)}, "triple_points_per_area": Q_A
        (1/unit²) or None, "triple_points": int or None}``. None for a volume.
    """

    voxel_size: tuple[float, ...]
    unit: str
    shape: tuple[int, ...]
    region: tuple[tuple[int, int], ...]
    phases: dict[int, PhaseStats]
    tpb_density: float | None = None
    tpb_phases: tuple[int, ...] | None = None
    tpb_edges: int | None = None
    methods: dict[str, Any] = field(default_factory=dict)
    sample_voxels: int | None = None
    profiles: dict[str, dict[str, Any]] = field(default_factory=dict)
    provenance: dict[str, Any] | None = None
    section: dict[str, Any] | None = None

    @property
    def volume(self) -> float:
        """Volume of the analysed region (unit³; of a 2D section its area, unit²)."""
        return float(np.prod(self.shape, dtype=np.float64) * np.prod(self.voxel_size))

    @property
    def sample_volume(self) -> float:
        """Volume of the sample (unit³): the region less what lay outside it (e.g. a pillar's own volume)."""
        if self.sample_voxels is None:
            return self.volume
        return float(self.sample_voxels * np.prod(self.voxel_size))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable form (see ``docs/analyze.md``).

        Returns
        -------
        dict
            ``voxel_size`` ([z, y, x]), ``unit``, ``phases`` (``{"1": {name, volume_fraction,
            specific_surface_area, largest_cluster_fraction, percolates, tortuosity,
            mean_size}}``), ``tpb_density`` and, for reference, ``shape``, ``region``,
            ``volume``, ``sample_volume``, ``sample_voxels``, ``profiles`` (NaN as null),
            ``tpb_phases``, ``tpb_edges``, ``methods`` and ``provenance``.
        """
        return {
            "voxel_size": [float(v) for v in self.voxel_size],
            "unit": self.unit,
            "phases": {str(k): p.to_dict() for k, p in self.phases.items()},
            "tpb_density": self.tpb_density,
            "shape": [int(s) for s in self.shape],
            "region": [[int(a), int(b)] for a, b in self.region],
            "volume": self.volume,
            "sample_volume": self.sample_volume,
            "sample_voxels": self.sample_voxels,
            "profiles": _jsonable_profiles(self.profiles),
            "tpb_phases": None if self.tpb_phases is None else list(self.tpb_phases),
            "tpb_edges": self.tpb_edges,
            "methods": dict(self.methods),
            "provenance": None if self.provenance is None else dict(self.provenance),
            "section": None if self.section is None else _jsonable_section(self.section),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Microstructure:
        """Rebuild a result from :meth:`to_dict` (e.g. a loaded JSON file)."""
        try:
            phases = {
                int(k): PhaseStats(
                    label=int(k),
                    name=v["name"],
                    voxels=int(v.get("voxels", 0)),
                    volume_fraction=v["volume_fraction"],
                    specific_surface_area=v["specific_surface_area"],
                    largest_cluster_fraction=v.get("largest_cluster_fraction"),
                    percolates=v.get("percolates"),
                    tortuosity=v.get("tortuosity"),
                    mean_size=v.get("mean_size"),
                    size_distribution=v.get("size_distribution"),
                )
                for k, v in d["phases"].items()
            }
            return cls(
                voxel_size=tuple(float(v) for v in d["voxel_size"]),
                unit=d["unit"],
                shape=tuple(int(s) for s in d.get("shape", ())),
                region=tuple((int(a), int(b)) for a, b in d.get("region", ())),
                phases=phases,
                tpb_density=d.get("tpb_density"),
                tpb_phases=None if d.get("tpb_phases") is None else tuple(d["tpb_phases"]),
                tpb_edges=d.get("tpb_edges"),
                methods=dict(d.get("methods") or {}),
                sample_voxels=None if d.get("sample_voxels") is None else int(d["sample_voxels"]),
                profiles={
                    a: {
                        "position": [float(v) for v in p["position"]],
                        "sample_voxels": [int(v) for v in p["sample_voxels"]],
                        "fractions": {int(k): [_num(v) for v in f] for k, f in p["fractions"].items()},
                        **({"tpb_density": [_num(v) for v in p["tpb_density"]]} if "tpb_density" in p else {}),
                    }
                    for a, p in (d.get("profiles") or {}).items()
                },
                provenance=d.get("provenance"),
                section=None if d.get("section") is None else _section_from_json(d["section"]),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise InputError(
                f"not an analyze result ({type(e).__name__}: {e}): pass the output of "
                "Microstructure.to_dict() or `xrayseg analyze --json`"
            ) from e

    def rows(self) -> list[dict[str, Any]]:
        """One flat dict per phase (the CSV table); the TPB density is on every row."""
        rows = []
        for k, p in self.phases.items():
            row: dict[str, Any] = {
                "label": k,
                "name": p.name,
                "volume_fraction": p.volume_fraction,
                "specific_surface_area": p.specific_surface_area,
                "largest_cluster_fraction": p.largest_cluster_fraction,
                "mean_size": p.mean_size,
                "d50": None if p.size_distribution is None else p.size_distribution["d50"],
            }
            for a in AXES:
                row[f"percolates_{a}"] = None if p.percolates is None else p.percolates[a]
            for a in AXES:
                row[f"tortuosity_{a}"] = None if p.tortuosity is None else p.tortuosity[a]
            row["tpb_density"] = self.tpb_density
            if self.section is not None:  # a 2D section's own measures
                row["boundary_length_per_area"] = self.section["boundary_length_per_area"].get(k)
                row["triple_points_per_area"] = self.section["triple_points_per_area"]
            row["unit"] = self.unit
            rows.append(row)
        return rows

    def to_json(self, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write :meth:`to_dict` as JSON (to a temporary file beside ``path``, then renamed).

        Raises
        ------
        OutputExistsError
            If ``path`` exists and ``overwrite`` is False.
        OutputWriteError
            If the file cannot be written.
        """
        return write_text_file(path, json.dumps(self.to_dict(), indent=2) + "\n", overwrite=overwrite, what="JSON")

    def to_csv(self, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write :meth:`rows` as CSV (empty cell = n/a), atomically.

        Raises
        ------
        OutputExistsError
            If ``path`` exists and ``overwrite`` is False.
        OutputWriteError
            If the file cannot be written.
        """
        return write_text_file(path, _csv_text(self.rows(), "label"), overwrite=overwrite, what="CSV")

    def profile_rows(self, axis: str = "z") -> list[dict[str, Any]]:
        """One flat dict per slice along ``axis``: index, position, sample voxels, each phase's fraction."""
        if axis not in self.profiles:
            raise InputError(f"no profile along {axis!r}: profiles are along {sorted(self.profiles) or 'no axis'}")
        p = self.profiles[axis]
        start = self.region[AXES.index(axis)][0] if self.region else 0
        rows = []
        for i, (pos, n) in enumerate(zip(p["position"], p["sample_voxels"])):
            row: dict[str, Any] = {"index": start + i, f"position_{self.unit}": pos, "sample_voxels": n}
            for k, f in p["fractions"].items():
                row[f"fraction_{k}"] = f[i]
            if "tpb_density" in p:
                row[f"tpb_density_per_{self.unit}2"] = p["tpb_density"][i]
            rows.append(row)
        return rows

    def to_profile_csv(self, path: str | os.PathLike, *, axis: str = "z", overwrite: bool = False) -> Path:
        """Write :meth:`profile_rows` as CSV (empty cell = no sample in that slice), atomically."""
        return write_text_file(path, _csv_text(self.profile_rows(axis), "index"), overwrite=overwrite, what="CSV")

    def extent(self) -> str:
        """The region in words, e.g. ``"48x192x192 voxels of 0.02 x 0.02 x 0.02 um"``.

        Without a voxel size: ``"48x192x192 voxels (no voxel size: lengths in voxels)"``.
        """
        shape = f"{'x'.join(map(str, self.shape))} {'pixels' if len(self.shape) == 2 else 'voxels'}"
        if self.unit == "voxel":
            return f"{shape} (no voxel size: lengths in voxels)"
        return f"{shape} of {' x '.join(f'{v:g}' for v in self.voxel_size)} {self.unit}"

    def table(self) -> str:
        """A plain-text table for the console and the CLI."""
        u = self.unit
        head: tuple[str, ...] = (
            "phase",
            "fraction",
            f"S_V (1/{u})",
            "largest",
            "perc. z/y/x",
            "tau z/y/x",
            f"size ({u})",
        )
        solid = (0, 1, 2, 3, 4, 5, 6) if self.section is None else (0, 1, 2, 6)  # a section: no connectivity, tau
        with_d50 = any(p.size_distribution is not None for p in self.phases.values())
        rows = [(*head, f"d50 ({u})") if with_d50 else head]
        for k, p in self.phases.items():
            perc = "/".join("yes" if p.percolates[a] else "no" for a in AXES) if p.percolates else "n/a"
            tau = "/".join(_fmt(p.tortuosity[a], 3, "-") for a in AXES) if p.tortuosity else "n/a"  # 1 column
            row = (
                f"{k} {p.name}",
                _fmt(p.volume_fraction),
                _fmt(p.specific_surface_area),
                _fmt(p.largest_cluster_fraction),
                perc,
                tau,
                _fmt(p.mean_size),
            )
            d50 = None if p.size_distribution is None else p.size_distribution["d50"]
            rows.append((*row, _fmt(d50)) if with_d50 else row)
        rows = [tuple(r[i] for i in solid) + r[7:] for r in rows]
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
        lines.insert(0, f"microstructure of {self.extent()}")
        if self.sample_voxels is not None:
            share = self.sample_voxels / max(1, int(np.prod(self.shape)))
            lines.insert(
                1,
                f"sample: {self.sample_voxels:,} {'pixels' if self.section else 'voxels'} ({share:.1%} of the region), "
                f"{_fmt(self.sample_volume)} {u}^{2 if self.section else 3}",
            )
        if self.tpb_density is not None:
            lines.append(
                f"TPB density ({'/'.join(map(str, self.tpb_phases or ()))}): {_fmt(self.tpb_density)} {u}/{u}^3"
            )
        if self.section is not None:
            lines.insert(
                1, "a 2D section: fraction, S_V, size and TPB are stereological estimates for an isotropic structure"
            )
            per = ", ".join(f"{k} {_fmt(v)}" for k, v in self.section["boundary_length_per_area"].items())
            lines.append(f"boundary length per area L_A (1/{u}): {per}")
            if self.section["triple_points_per_area"] is not None:
                lines.append(
                    f"triple points: {self.section['triple_points']}, {_fmt(self.section['triple_points_per_area'])} "
                    f"per {u}^2"
                )
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.table()


def _fmt(v: Any, digits: int = 4, missing: str = "n/a") -> str:
    if v is None:
        return missing
    if isinstance(v, float):  # 4 significant digits below 0.1 too (S_V in 1/nm is ~0.002)
        if abs(v) >= 1e4 or (v and abs(v) < 1e-3):
            return f"{v:.{digits}g}"
        return f"{v:#.{digits}g}" if v and abs(v) < 0.1 else f"{v:.{digits}f}"
    return str(v)


def write_text_file(path: str | os.PathLike, text: str, *, overwrite: bool = False, what: str = "text") -> Path:
    """Write ``text`` to a temporary file beside ``path``, then move it there (:func:`.output.write_text`).

    An existing ``path`` is never replaced unless ``overwrite``; a failed write leaves
    no partial file behind.

    Raises
    ------
    OutputExistsError
        If ``path`` exists (or appears meanwhile) and ``overwrite`` is False.
    OutputWriteError
        If the location cannot be written (disk full, read-only, a file in the way).
    InputError
        If ``path`` is a folder.
    """
    from .output import write_text

    return write_text(path, text, overwrite=overwrite, what=f"{what} output", option=f"--{what.lower()}")


# --------------------------------------------------------------------------- inputs


def parse_region(region: Any, shape: Sequence[int]) -> tuple[tuple[int, int], ...]:
    """Normalise a sub-volume to ``((z0, z1), (y0, y1), (x0, x1))`` inside ``shape``.

    Parameters
    ----------
    region : None, str, or sequence
        None (everything); a string ``"z0:z1,y0:y1,x0:x1"`` (empty bounds and omitted
        axes mean the whole axis, e.g. ``"0:64"`` or ``":,100:300,100:300"``); or one
        ``slice`` or ``(start, stop)`` per axis.
    shape : sequence of int
        Shape of the volume.

    Returns
    -------
    tuple of (int, int)

    Raises
    ------
    InputError
        For a malformed or empty region, or one outside the volume.

    Examples
    --------
    >>> parse_region("0:4,:,2:", (8, 16, 16))
    ((0, 4), (0, 16), (2, 16))
    """
    ndim = len(shape)
    if region is None:
        return tuple((0, int(s)) for s in shape)
    parts: list[Any]
    if isinstance(region, str):
        parts = [p.strip() for p in region.split(",")] if region.strip() else []
    else:
        parts = list(region)
    if len(parts) > ndim:
        raise InputError(f"region {region!r} has {len(parts)} axes for a {ndim}D volume: give z0:z1,y0:y1,x0:x1")
    out = []
    for i, n in enumerate(shape):
        p = parts[i] if i < len(parts) else slice(None)
        try:
            if isinstance(p, str):
                a, sep, b = p.partition(":")
                if not sep:
                    raise ValueError(p)
                p = slice(int(a) if a.strip() else None, int(b) if b.strip() else None)
            if isinstance(p, slice):
                if p.step not in (None, 1):
                    raise ValueError("steps are not supported")
                start = 0 if p.start is None else int(p.start)
                stop = int(n) if p.stop is None else int(p.stop)
            else:
                start, stop = (int(v) for v in p)
        except (TypeError, ValueError) as e:
            raise InputError(f"region {region!r} is not of the form z0:z1,y0:y1,x0:x1 ({e})") from e
        if not 0 <= start < stop <= n:
            raise InputError(
                f"region {region!r} is empty or outside the volume of shape {tuple(shape)} "
                f"along axis {AXES[i - ndim + 3] if ndim <= 3 else i}"
            )
        out.append((int(start), int(stop)))
    return tuple(out)


def _check_labels(labels: Any) -> Any:
    from .io import as_input

    labels = as_input(labels, "labels")
    if not hasattr(labels, "shape") or not hasattr(labels, "dtype"):
        labels = np.asarray(labels)
    if len(labels.shape) not in (2, 3):
        raise InputError(
            f"analyze needs a 3D label volume (z, y, x) or a 2D section (y, x), got shape {tuple(labels.shape)}"
        )
    dt = np.dtype(labels.dtype)
    if dt.kind not in "uibf":  # whole-number floats (Avizo, Dragonfly exports) as train and evaluate take them (QA)
        raise InputError(f"labels have dtype {dt}: analyze needs integer labels (one value per phase)")
    if min(labels.shape) < 1:
        raise InputError(f"labels of shape {tuple(labels.shape)} are empty")
    return labels


def _names(labels: Sequence[int], class_names: Any, present: Sequence[int] | None = None) -> dict[int, str]:
    """Names of ``labels`` from a mapping ``{label: name}`` or a list naming the phases ``present``.

    A list names the nonzero phases present in the order of their values, or labels 1, 2, ...
    (:func:`~napari_xrayseg.core.labels.names_by_label`), whichever phases are reported.
    """
    if class_names is None:
        return {k: str(k) for k in labels}
    m = names_by_label(class_names, labels if present is None else present, what="phases")
    unnamed = [k for k in labels if k not in m and k != 0]  # 0 is named by number (often "no phase")
    if unnamed:
        log.warning(
            "no name given for label%s %s: shown by number",
            "s" if len(unnamed) > 1 else "",
            ", ".join(map(str, unnamed)),
        )
    return {k: m.get(k, str(k)) for k in labels}


def _slab_depth(arr: Any, plane: int, block_slices: int | None) -> int:
    if block_slices is not None:
        if block_slices < 1:
            raise InputError(f"block_slices {block_slices} must be at least 1")
        return int(block_slices)
    chunks = volume_chunks(arr)
    depth = max(1, _SLAB_BYTES // max(plane, 1))
    if chunks and chunks[0] <= 2 * depth:  # whole chunks: each chunk is decoded once
        c = chunks[0]
        depth = max(c, (depth // c) * c)
    # deeper chunks are read in part (decoded more than once): rounded up to 64 slices of 2048² the slab's
    # temporaries took 3.8 GB and --fractions-only was killed under 3 GiB (QA); 8 slices took 0.82 GB, as fast
    return depth


# --------------------------------------------------------------------------- slab-wise quantities


def _num(v: Any) -> Any:
    """A number for JSON: NaN (and None) as None."""
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else v


def _csv_text(rows: list[dict[str, Any]], first: str) -> str:
    """CSV of flat rows: floats as repr (every digit), None and NaN as an empty cell."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else [first], lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: "" if _num(v) is None else repr(v) if isinstance(v, float) else v for k, v in r.items()})
    return buf.getvalue()


def _jsonable_profiles(profiles: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {
        a: {
            "position": list(p["position"]),
            "sample_voxels": list(p["sample_voxels"]),
            "fractions": {str(k): [_num(v) for v in f] for k, f in p["fractions"].items()},
            **({"tpb_density": [_num(v) for v in p["tpb_density"]]} if "tpb_density" in p else {}),
        }
        for a, p in profiles.items()
    }


def _jsonable_section(section: dict[str, Any]) -> dict[str, Any]:
    return {**section, "boundary_length_per_area": {str(k): v for k, v in section["boundary_length_per_area"].items()}}


def _section_from_json(d: dict[str, Any]) -> dict[str, Any]:
    return {**d, "boundary_length_per_area": {int(k): v for k, v in d["boundary_length_per_area"].items()}}


def _profiles(
    per_label: dict[int, list[np.ndarray]],
    shape: Sequence[int],
    chosen: Sequence[int],
    outside: int | None,
    reg: Any,
    spacing: Any,
    tpb_len: list[np.ndarray] | None = None,
    tpb_correction: float = ISOTROPIC_STAIRCASE,
) -> dict[str, dict[str, Any]]:
    """Fractions (and the TPB density) per slice along each axis from per-slice counts along each axis."""
    out = {}
    for ax, name in enumerate(AXES):
        n_data = np.zeros(shape[ax], dtype=np.int64)
        for v, c in per_label.items():
            if v != outside:
                n_data += c[ax]
        with np.errstate(divide="ignore", invalid="ignore"):
            frac = {
                int(p): [float(f) for f in np.where(n_data > 0, per_label[p][ax] / n_data, np.nan)]
                if p in per_label
                else [0.0 if n else math.nan for n in n_data]
                for p in chosen
            }
        out[name] = {
            "position": [float((reg[ax][0] + i) * spacing[ax]) for i in range(shape[ax])],
            "sample_voxels": [int(v) for v in n_data],
            "fractions": frac,
        }
        if tpb_len is not None:
            with np.errstate(divide="ignore", invalid="ignore"):
                vol = n_data * float(np.prod(spacing))
                d = np.where(n_data > 0, tpb_len[ax] / tpb_correction / vol, np.nan)
            out[name]["tpb_density"] = [float(v) for v in d]
    return out


def _as_small(block: np.ndarray, where: str) -> np.ndarray:
    """Labels as a non-negative integer array usable as bincount indices."""
    if block.dtype == np.bool_:
        return block.astype(np.uint8)
    if block.dtype.kind == "f":  # whole numbers only: NaN, inf and fractions are named
        from .labels import check_labels

        return check_labels(block, "labels", max_value=_MAX_LABEL)
    if block.dtype.kind == "i" and block.size and block.min() < 0:
        raise InputError(f"{where} hold negative values: use label values 0..{_MAX_LABEL}")
    if block.size and block.max() > _MAX_LABEL:
        raise InputError(f"{where} hold values up to {block.max()}: use phase values 0..{_MAX_LABEL}")
    return block


def _face_counts(
    s: np.ndarray, n_new: int, spacing: tuple[float, float, float], nb: int, outside: int | None = None
) -> np.ndarray:
    """Physical area of the faces between each label and other labels (staircase, uncorrected).

    Faces with ``outside`` (voxels without data) are the sample's edge, not a surface: left out.
    """
    dz, dy, dx = spacing
    area = np.zeros(nb, dtype=np.float64)
    pairs = [(s[:-1], s[1:], dy * dx)]  # z-faces: includes the link to the overlap slice
    t = s[:n_new]
    pairs += [(t[:, :-1], t[:, 1:], dz * dx), (t[:, :, :-1], t[:, :, 1:], dz * dy)]
    for a, b, face in pairs:
        if a.size == 0:
            continue
        diff = a != b
        if outside is not None:
            diff &= (a != outside) & (b != outside)
        area += face * (np.bincount(a[diff], minlength=nb)[:nb] + np.bincount(b[diff], minlength=nb)[:nb])
    return area


def sample_envelope(
    labels: np.ndarray, surroundings: int, *, radius: float | None = None, outside: int | None = None
) -> np.ndarray:
    """Per slice along z, the sample's envelope: True inside the sample, False in what surrounds it.

    A PXCT pillar stands in air, which a segmentation labels as pore. In each (Y, X) slice the
    voxels that are neither ``surroundings`` nor ``outside`` are the sample's other phases;
    pieces of them smaller than :data:`ENVELOPE_DEBRIS` of the largest (dust, or noise in the
    air segmented as a solid) are left out. The envelope is then

    - ``radius=None`` (default): the convex hull of those pieces, for a pillar (a cylinder or
      a prism: every pore open at its surface stays inside it);
    - ``radius=r``: those pieces closed by a disc of ``r`` voxels (gaps up to ``2 r`` wide,
      the surface pores, are bridged) and their holes filled, for a sample that is not convex.
      The closing sees each slice mirrored at its edges, so a sample cut by the edge keeps its
      pores there; an air gap along the edge narrower than ``r`` is bridged, though.

    A slice without the sample's phases is all surroundings.

    Parameters
    ----------
    labels : numpy.ndarray of shape (N, Y, X)
        Label slices.
    surroundings : int
        The label of what surrounds the sample (e.g. 1 where the air is segmented as pore).
    radius : float, optional
        Radius of the closing, in voxels; None: the convex hull.
    outside : int, optional
        The label of voxels without data (never sample).

    Returns
    -------
    numpy.ndarray of bool, shape (N, Y, X)

    Examples
    --------
    >>> lab = np.ones((1, 9, 9), np.uint8); lab[0, 2:7, 2:7] = 2; lab[0, 4, 4] = 1  # a pore inside
    >>> lab[0, 2, 4] = 1; lab[0, 0, 8] = 3  # a pore open to the surface, a speck of dust in the air
    >>> env = sample_envelope(lab, 1)
    >>> bool(env[0, 4, 4]), bool(env[0, 2, 4]), bool(env[0, 0, 8]), int(env.sum())
    (True, True, False, 25)
    >>> int(sample_envelope(lab, 1, radius=1.5).sum())
    25
    """
    from scipy import ndimage as ndi

    _check_envelope_radius(radius)
    labels = np.asarray(labels)
    out = np.zeros(labels.shape, dtype=bool)
    for i, sl in enumerate(labels):
        solid = sl != surroundings
        if outside is not None:
            solid &= sl != outside
        pieces, n = ndi.label(solid, structure=np.ones((3, 3)))
        if n == 0:
            continue
        size = np.bincount(pieces.ravel())
        size[0] = 0
        solid = (size >= ENVELOPE_DEBRIS * size.max())[pieces]
        if radius is None:
            env = _convex_fill(solid)
        else:
            pad = int(math.ceil(radius)) + 1
            grown = ndi.distance_transform_edt(~np.pad(solid, pad, mode="symmetric")) <= radius
            closed = ndi.distance_transform_edt(grown)[pad:-pad, pad:-pad] > radius
            env = ndi.binary_fill_holes(closed | solid)
        if outside is not None:
            env &= sl != outside
        out[i] = env
    return out


def sample_envelope_lazy(
    labels: Any, surroundings: int, *, radius: float | None = None, outside: int | None = None
) -> Any:
    """:func:`sample_envelope` of a whole (Z, Y, X) volume as a lazy dask array, slice by slice when read.

    For a napari layer that shows what :func:`analyze` with ``envelope`` counts as the sample.
    """
    import dask.array as da

    arr = labels if isinstance(labels, da.Array) else da.from_array(labels, chunks=(1, *labels.shape[1:]))
    arr = arr.rechunk((1, -1, -1))
    return arr.map_blocks(sample_envelope, surroundings, radius=radius, outside=outside, dtype=bool)


def _convex_fill(mask: np.ndarray) -> np.ndarray:
    """The pixels of a (Y, X) mask's convex hull: those whose centre lies in the hull of its pixels' edges.

    What ``skimage.morphology.convex_hull_image`` gives, faster: the hull of a pixel set is
    the hull of each row's first and last pixel, so only those go to qhull, and the hull is
    filled row by row from its edges (a 2048^2 pillar slice in 8 ms, where skimage takes 1.1 s;
    the same pixels, checked on 2000 random masks).

    >>> m = np.zeros((5, 5), bool); m[1, 1] = m[3, 3] = m[1, 3] = True
    >>> _convex_fill(m).astype(int)
    array([[0, 0, 0, 0, 0],
           [0, 1, 1, 1, 0],
           [0, 0, 1, 1, 0],
           [0, 0, 0, 1, 0],
           [0, 0, 0, 0, 0]])
    """
    from scipy.spatial import ConvexHull

    rows = np.flatnonzero(mask.any(axis=1))
    first = mask[rows].argmax(axis=1)
    last = mask.shape[1] - 1 - mask[rows, ::-1].argmax(axis=1)
    # the middles of the pixels' edges (skimage's offsets): each row's first and last pixel's
    y = np.concatenate([rows, rows - 0.5, rows + 0.5, rows, rows - 0.5, rows + 0.5])
    x = np.concatenate([first - 0.5, first, first, last + 0.5, last, last])
    pts = np.stack([y, x], axis=1)
    v = pts[ConvexHull(pts).vertices]  # counter-clockwise, no repeats
    y0, x0 = v[:, 0], v[:, 1]
    y1, x1 = np.roll(y0, -1), np.roll(x0, -1)
    ys = np.arange(int(rows[0]), int(rows[-1]) + 1)[:, None].astype(float)
    lo, hi = np.minimum(y0, y1), np.maximum(y0, y1)
    on = (lo <= ys) & (ys <= hi)
    with np.errstate(divide="ignore", invalid="ignore"):
        xs = np.where(y1 != y0, x0 + (ys - y0) * (x1 - x0) / (y1 - y0), x0)
    left = np.where(on, np.where(y1 != y0, xs, np.minimum(x0, x1)), np.inf).min(axis=1)
    right = np.where(on, np.where(y1 != y0, xs, np.maximum(x0, x1)), -np.inf).max(axis=1)
    a = np.clip(np.ceil(left - 1e-9), 0, mask.shape[1]).astype(np.int64)
    b = np.clip(np.floor(right + 1e-9) + 1, 0, mask.shape[1]).astype(np.int64)
    out = np.zeros(mask.shape, dtype=bool)
    cols = np.arange(mask.shape[1])
    out[rows[0] : rows[-1] + 1] = (cols >= a[:, None]) & (cols < b[:, None])
    return out | mask


def _check_envelope_radius(radius: Any) -> None:
    if radius is not None and not (isinstance(radius, (int, float)) and not isinstance(radius, bool) and radius > 0):
        raise InputError(f"envelope radius {radius!r} must be a positive number of voxels, or None (convex hull)")


def _envelope_outside(envelope: Any, radius: Any, outside: Any) -> int | None:
    """Checked ``outside``; with an ``envelope`` label, 0 when not given (what lies beyond the envelope)."""
    for name, v in (("outside", outside), ("envelope", envelope)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer))):
            raise InputError(f"{name} {v!r} must be a label value, e.g. {0 if name == 'outside' else 1}")
    if envelope is None:
        return None if outside is None else int(outside)
    _check_envelope_radius(radius)
    outside = 0 if outside is None else int(outside)
    if int(envelope) == outside:
        raise InputError(
            f"envelope {envelope} is the outside label: pass the label of what surrounds the sample, e.g. 1"
        )
    return outside


def _read_labels(
    labels: Any,
    zs: slice,
    reg: tuple[tuple[int, int], ...],
    what: str,
    envelope: int | None,
    radius: float,
    outside: int | None,
) -> np.ndarray:
    """Labels of slices ``zs`` in the region; with ``envelope``, those beyond the sample's envelope are ``outside``."""
    (_, _), (y0, y1), (x0, x1) = reg
    if envelope is None:
        return _as_small(read_block(labels, (zs, slice(y0, y1), slice(x0, x1)), what=what), what)
    whole = _as_small(
        read_block(labels, (zs, slice(None), slice(None)), what=what), what
    )  # the envelope sees whole slices
    s = np.array(whole[:, y0:y1, x0:x1])
    s[~sample_envelope(whole, envelope, radius=radius, outside=outside)[:, y0:y1, x0:x1]] = outside
    return s


def _mesh_area(s: np.ndarray, label: int, spacing: tuple[float, float, float]) -> float:
    """Marching-cubes area of the boundary of ``s == label`` inside the slab's cube grid."""
    from skimage import measure

    if min(s.shape) < 2:
        return 0.0
    mask = s == label
    if not mask.any() or mask.all():
        return 0.0
    verts, faces, _, _ = measure.marching_cubes(
        mask.astype(np.float32), 0.5, spacing=spacing, method="lewiner", allow_degenerate=True
    )
    return float(measure.mesh_surface_area(verts, faces))


def _tpb_edges(
    s: np.ndarray, n_new: int, phases: tuple[int, int, int] | None, outside: int | None = None
) -> tuple[np.ndarray, ...]:
    """Boolean maps of the TPB edges along z, y and x owned by this slab.

    An edge along an axis is surrounded by the 2x2 voxels of the other two axes; it is a
    TPB edge when they hold all three ``phases`` (or, with ``phases=None``, three or more
    distinct labels) and no voxel labelled ``outside`` (the sample's edge). Edge along x at
    ``[i, j, k]`` is the one between voxels ``[i:i+2, j:j+2, k]``; its midpoint is at
    ``(i + 0.5, j + 0.5, k)``.
    """

    def quad(a: np.ndarray, b: np.ndarray, c: np.ndarray, d: np.ndarray) -> np.ndarray:
        if phases is not None:
            out = None
            for p in phases:
                has = (a == p) | (b == p) | (c == p) | (d == p)
                out = has if out is None else out & has
        else:
            n = (b != a).astype(np.uint8)
            n += (c != a) & (c != b)
            n += (d != a) & (d != b) & (d != c)
            out = n >= 2
        if outside is not None:
            out &= (a != outside) & (b != outside) & (c != outside) & (d != outside)
        return out

    t = s[:n_new]
    ez = quad(t[:, :-1, :-1], t[:, 1:, :-1], t[:, :-1, 1:], t[:, 1:, 1:])  # edges along z: y-x squares
    if s.shape[0] >= 2:
        zz = s[: n_new + 1] if s.shape[0] > n_new else s
        ey = quad(zz[:-1, :, :-1], zz[1:, :, :-1], zz[:-1, :, 1:], zz[1:, :, 1:])  # along y: z-x squares
        ex = quad(zz[:-1, :-1], zz[1:, :-1], zz[:-1, 1:], zz[1:, 1:])  # along x: z-y squares
    else:
        ey = np.zeros((0, s.shape[1], s.shape[2] - 1), dtype=bool)
        ex = np.zeros((0, s.shape[1] - 1, s.shape[2]), dtype=bool)
    return ez, ey, ex


def _in_layer_clusters(flags: np.ndarray, axis: int) -> int:
    """8-connected clusters of ``flags`` counted in each 2D layer normal to ``axis`` (never across layers).

    The TPB lines' crossings of a layer: an Euler number (clusters less their holes) stood for them and
    went negative on fragmented labels, where the edges of a layer enclose holes (QA: -4.6 um/um^3).
    """
    from scipy import ndimage as ndi

    st = np.zeros((3,) * flags.ndim, bool)
    st[tuple(1 if i == axis else slice(None) for i in range(flags.ndim))] = True
    return int(ndi.label(flags, structure=st)[1])


class _LayerClusters:
    """8-connected clusters of flags in 2D layers that arrive a block of rows at a time: an exact count.

    ``add(rows)`` takes a block (R, L, Q): R rows of each of L layers of width Q. Clusters of a block
    meeting those of the previous block's last row are joined (union-find over global ids), so a
    cluster split by a slab boundary counts once.
    """

    def __init__(self) -> None:
        self.parent: list[int] = [0]  # id 0: no cluster
        self.count = 0
        self._prev: np.ndarray | None = None  # global ids of the last row so far (L, Q)

    def _root(self, i: int) -> int:
        p = self.parent
        while p[i] != i:
            p[i] = p[p[i]]
            i = p[i]
        return i

    def add(self, rows: np.ndarray) -> None:
        from scipy import ndimage as ndi

        if rows.shape[0] == 0:
            return
        st = np.zeros((3, 3, 3), bool)
        st[:, 1, :] = True  # within a layer only
        lab, n = ndi.label(rows, structure=st)
        base = len(self.parent)
        self.parent.extend(range(base, base + n))
        self.count += n
        ids = np.where(lab > 0, lab + (base - 1), 0)
        if self._prev is not None:
            p, c = self._prev, ids[0]
            for pp, cc in ((p, c), (p[:, :-1], c[:, 1:]), (p[:, 1:], c[:, :-1])):  # q' = q, q - 1, q + 1
                both = (pp > 0) & (cc > 0)
                if both.any():
                    for a, b in np.unique(np.stack([pp[both], cc[both]], axis=1), axis=0).tolist():
                        ra, rb = self._root(a), self._root(b)
                        if ra != rb:
                            self.parent[ra] = rb
                            self.count -= 1
        self._prev = ids[-1].copy()


# --------------------------------------------------------------------------- whole-region quantities


def _clusters(mask: np.ndarray) -> tuple[float | None, dict[str, bool]]:
    """Largest-cluster fraction and percolation per axis of one phase mask (6-connectivity)."""
    from scipy import ndimage as ndi

    n_phase = int(np.count_nonzero(mask))
    if n_phase == 0:
        return None, dict.fromkeys(AXES, False)
    lab, n = ndi.label(mask)  # default structure: faces only (6-connectivity in 3D)
    sizes = np.bincount(lab.ravel(), minlength=n + 1)
    sizes[0] = 0
    largest = float(sizes.max() / n_phase)
    perc = {}
    for ax, name in enumerate(AXES):
        first = np.unique(np.take(lab, 0, axis=ax))
        last = np.unique(np.take(lab, -1, axis=ax))
        both = np.intersect1d(first, last)
        perc[name] = bool(np.any(both > 0))
    return largest, perc


def _chords(
    mask: np.ndarray,
    spacing: tuple[float, float, float],
    axes: Sequence[int] = (0, 1, 2),
    cut: np.ndarray | None = None,
) -> tuple[float, float]:
    """Total physical length and number of chords of ``mask`` along ``axes``, without edge-touching ones.

    ``cut``: voxels outside the sample; a chord that ends at one is cut short like one at an edge.
    Each axis's chords count by the area one of its grid lines stands for (the voxel's face across
    it, relative to the largest such face): on anisotropic voxels an axis with more lines per area
    counted more, so the same cuboids measured 4.80, 5.33 and 4.44 on 1x1x1, 2x1x1 and 0.5x1x1
    voxels (QA s44); on cubic voxels every weight is 1.
    """
    total, count = 0.0, 0.0
    area = [math.prod(spacing) / spacing[ax] for ax in range(len(spacing))]
    for ax in axes:
        w = area[ax] / max(area[a] for a in axes)
        m = np.moveaxis(mask, ax, -1)
        n = m.shape[-1]
        if n < 3:
            continue
        flat = m.reshape(-1, n)
        padded = np.zeros((flat.shape[0], n + 2), dtype=np.int8)
        padded[:, 1:-1] = flat
        d = np.diff(padded, axis=1).ravel()
        del padded
        starts = np.flatnonzero(d == 1)
        ends = np.flatnonzero(d == -1)
        del d
        row = n + 1
        s_pos, e_pos = starts % row, ends % row
        keep = (s_pos > 0) & (e_pos < n)  # runs touching either face are cut short: left out
        if cut is not None:
            c = np.moveaxis(cut, ax, -1).reshape(-1, n)
            r = starts // row
            keep &= ~c[r, np.maximum(s_pos - 1, 0)] & ~c[r, np.minimum(e_pos, n - 1)]
        lengths = (e_pos - s_pos)[keep]
        total += float(lengths.sum()) * spacing[ax] * w
        count += lengths.size * w
    return total, count


def _size_distribution(
    mask: np.ndarray, spacing: tuple[float, float, float], steps: int = SIZE_STEPS, cancel: CancelToken | None = None
) -> dict:
    """The continuous size distribution of a phase mask (Münch & Holzer 2008), by Euclidean distance maps.

    For each radius ``r`` (``steps`` of them, geometric from the smallest voxel side to the
    largest inscribed ball), the share of the phase covered by balls of radius ``r`` or larger
    that fit in it (the voxels within ``r`` of those at least ``r`` from the rest: the phase
    opened by a ball, united over the larger radii, i.e. the share whose local thickness is at
    least ``2 r``). Diameters ``2 r``; ``d50`` where the share falls to 0.5 (log-linear between steps).
    Outside the array the phase is taken to go on (balls may cross the region's faces).
    """
    from scipy import ndimage as ndi

    n = int(mask.sum())
    if n == 0:
        return {"diameter": [], "cumulative": [], "d50": None}
    dt = ndi.distance_transform_edt(np.pad(mask, 1, mode="edge"), sampling=spacing)[1:-1, 1:-1, 1:-1]
    top = float(dt.max())
    radii = np.unique(np.geomspace(min(spacing), max(top, min(spacing)), steps))
    share = np.zeros(len(radii))
    covered = np.zeros(mask.shape, dtype=bool)  # by a ball of radius r or larger: the local thickness >= 2 r
    for i in range(len(radii) - 1, -1, -1):
        check(cancel)  # a distance map per radius: seconds each on large regions
        r = radii[i]
        core = dt >= r
        if core.any():
            covered |= ndi.distance_transform_edt(~np.pad(core, 1, mode="edge"), sampling=spacing)[1:-1, 1:-1, 1:-1] < r
        share[i] = float(np.count_nonzero(covered & mask)) / n
    d = 2 * radii
    c = share
    d50 = None
    below = np.flatnonzero(c < 0.5)
    if below.size and below[0] > 0:
        i = int(below[0])  # c[i - 1] >= 0.5 > c[i]
        t = (c[i - 1] - 0.5) / (c[i - 1] - c[i])
        d50 = float(np.exp(np.log(d[i - 1]) + t * (np.log(d[i]) - np.log(d[i - 1]))))
    elif not below.size:
        d50 = float(d[-1])  # every ball up to the largest one covers half of it or more
    return {"diameter": [float(v) for v in d], "cumulative": [float(v) for v in c], "d50": d50}


TAUFACTOR_MISSING = (
    "tortuosity needs TauFactor: pip install 'napari-xrayseg[physics]' (or pass tortuosity=False / --no-tortuosity)"
)


def tortuosity_available() -> bool:
    """Whether TauFactor (the ``physics`` extra) is installed, without importing it."""
    import importlib.util

    return importlib.util.find_spec("taufactor") is not None


#: Threads whose TauFactor prints are dropped (the solves'); everyone else's output goes through.
_MUTED: set[int] = set()


def _taufactor_print(*args: Any, **kwargs: Any) -> None:
    if threading.get_ident() not in _MUTED:
        print(*args, **kwargs)


def _mute_taufactor() -> None:
    """Route TauFactor's ``print`` through :func:`_taufactor_print`.

    ``contextlib.redirect_stdout`` swapped ``sys.stdout`` for the whole process: while the Analyze
    widget's worker solved, what other threads (the napari console) printed vanished.
    """
    for name in ("taufactor.taufactor", "taufactor.metrics"):
        module = sys.modules.get(name)
        if module is not None:
            module.print = _taufactor_print  # type: ignore[attr-defined]


def _taufactor_solve(
    mask: np.ndarray,
    ax: int,
    spacing: tuple[float, float, float],
    device: Any,
    cancel: CancelToken | None,
    iter_limit: int,
    conv_crit: float,
) -> float | None:
    """Tortuosity factor of ``mask`` along ``ax`` with TauFactor; checks ``cancel`` every 100 iterations."""
    try:
        import taufactor
    except ImportError as e:  # pragma: no cover - the test extra installs it
        raise InputError(TAUFACTOR_MISSING) from e
    import torch

    img = np.ascontiguousarray(np.moveaxis(mask, ax, 0)).astype(np.uint8)
    sp = (spacing[ax], *(spacing[i] for i in range(3) if i != ax))
    threads = torch.get_num_threads()
    if img.size < _SMALL_SOLVE:  # small grids: one thread is faster, and never thrashes on a busy CPU
        torch.set_num_threads(1)
    _mute_taufactor()
    _MUTED.add(threading.get_ident())  # TauFactor prints its progress: not from this thread
    try:
        if len(set(sp)) == 1:
            solver = taufactor.Solver(img, device=device)
        else:
            solver = _anisotropic_solver(taufactor)(img, spacing=tuple(float(v) for v in sp), device=device)
        while not solver.converged and solver.iter < iter_limit:
            check(cancel)
            # 100: TauFactor checks convergence every 100 iterations (the same iterations and result as 500),
            # and a cancel waits for at most 100 (QA h5: 31 s for 500 on 96 x 256 x 256)
            tau = solver.solve(iter_limit=min(solver.iter + 100, iter_limit), verbose=False, conv_crit=conv_crit)
    finally:
        _MUTED.discard(threading.get_ident())
        torch.set_num_threads(threads)
    if not solver.converged:
        log.warning(
            "TauFactor did not converge along %s in %d iterations; reporting the last value", AXES[ax], iter_limit
        )
    t = float(np.asarray(tau).ravel()[0])
    return t if math.isfinite(t) and t > 0 else None


#: Relative residual at which :func:`_amg_solve` stops (tau to about 1e-6 relative; TauFactor's default
#: criterion left it 0.15 % off a tight solve, QA s45).
AMG_RTOL = 1e-8


def amg_available() -> bool:
    """Whether pyamg (the ``physics`` extra) is installed: the CPU's tortuosity solver (:func:`_amg_solve`)."""
    import importlib.util

    return importlib.util.find_spec("pyamg") is not None


#: The multigrid solver takes a CPU solve of a phase holding at most this share of the region ...
AMG_MAX_SHARE = 0.45
#: ... along an axis of at least this many voxels (TauFactor's iterations grow with it) ...
AMG_MIN_LENGTH = 128
#: ... when this many bytes per phase voxel (its hierarchy; 170-700 measured) fit in half the available RAM.
AMG_BYTES = 800


def _amg_chosen(mask: np.ndarray, ax: int) -> bool:
    """Whether :func:`_amg_solve` rather than TauFactor solves ``mask`` along ``ax`` on the CPU.

    Measured on 2 cores (session 45 and its review): a phase of 30 % along 256 voxels 14.9 s against
    TauFactor's 39.5 s, along 192 voxels 4.7 against 5.4 s; but a phase of 60 % 10.6 against 5.9 s and of
    90 % 16.6 against 4.2 s (TauFactor converges fast on straight paths), with 170, 437 and 693 bytes
    per voxel against TauFactor's 76-88. So: thin phases along long axes, where TauFactor is slowest,
    and only where the hierarchy fits in memory.
    """
    from .device import available_memory

    if not amg_available() or mask.shape[ax] < AMG_MIN_LENGTH:
        return False
    n = int(np.count_nonzero(mask))
    if n > AMG_MAX_SHARE * mask.size:
        return False
    free = available_memory()
    return free is None or n * AMG_BYTES <= 0.5 * free


def _amg_solve(
    mask: np.ndarray, ax: int, spacing: tuple[float, float, float], cancel: CancelToken | None
) -> float | None:
    """Tortuosity factor of ``mask`` along ``ax``: TauFactor's problem, solved by algebraic multigrid on the CPU.

    The same finite volumes as TauFactor: one unknown concentration per voxel of the phase in a
    cluster touching both faces normal to ``ax`` (6-connected), conductance area / distance between
    neighbours, the faces held at 1 and 0 half a voxel outside the region, no flux elsewhere; then
    tau = eps D / D_eff with eps the phase's share of the whole region (dead ends included); equal
    to TauFactor's run to a tight criterion within 1e-4 (1e-6 typically; the test). TauFactor
    iterates about 8 L times over the volume, its time growing with voxels x L; conjugate
    gradients preconditioned by classical algebraic multigrid (pyamg) take about 20 iterations
    whatever the size: on 2 CPU cores 14.9 s against 39.5 s for one solve of a 96 x 256 x 256
    region, 3.7 s against 4.0 s at 48 x 192 x 192 (``benchmarks/tortuosity_cpu.py``, one run).
    ``cancel`` is checked at every iteration.
    """
    import pyamg
    import scipy.sparse as sps
    from scipy import ndimage as ndi

    m = np.moveaxis(mask, ax, 0)
    sp = np.array([spacing[ax], *(spacing[i] for i in range(3) if i != ax)], dtype=np.float64)
    lab, _ = ndi.label(m)
    through = np.intersect1d(lab[0][lab[0] > 0], lab[-1][lab[-1] > 0])
    if through.size == 0:
        return None
    live = np.isin(lab, through)
    del lab
    n = int(live.sum())
    index = np.full(m.shape, -1, dtype=np.int64)
    index[live] = np.arange(n)
    area = (sp[1] * sp[2], sp[0] * sp[2], sp[0] * sp[1])
    rows, cols, vals = [], [], []
    diag = np.zeros(n)
    for k in range(3):
        lo = tuple(slice(None, -1) if i == k else slice(None) for i in range(3))
        hi = tuple(slice(1, None) if i == k else slice(None) for i in range(3))
        both = live[lo] & live[hi]
        a, b = index[lo][both], index[hi][both]
        g = area[k] / sp[k]
        rows += [a, b]
        cols += [b, a]
        vals += [np.full(a.size, -g), np.full(a.size, -g)]
        diag += g * (np.bincount(a, minlength=n) + np.bincount(b, minlength=n))
    g_face = area[0] / (sp[0] / 2)  # to the face held at 1 (inlet) or 0 (outlet), half a voxel away
    inlet, outlet = index[0][live[0]], index[-1][live[-1]]
    diag += g_face * (np.bincount(inlet, minlength=n) + np.bincount(outlet, minlength=n))
    rhs = np.zeros(n)
    rhs[inlet] = g_face
    rows.append(np.arange(n))
    cols.append(np.arange(n))
    vals.append(diag)
    matrix = sps.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
    del rows, cols, vals, index, live
    solver = pyamg.ruge_stuben_solver(matrix)  # classical AMG: the quickest set-up here (smoothed aggregation 2x)
    residuals: list[float] = []
    conc = solver.solve(
        rhs, tol=AMG_RTOL, accel="cg", maxiter=500, residuals=residuals, callback=lambda _x: check(cancel)
    )
    if residuals and residuals[-1] > 100 * AMG_RTOL * residuals[0]:
        log.warning(
            "the tortuosity solve along %s stopped at a relative residual of %.1e",
            AXES[ax],
            residuals[-1] / residuals[0],
        )
    flux = g_face * float(np.sum(1.0 - conc[inlet]))
    d_eff = flux * (m.shape[0] * sp[0]) / (m.shape[1] * sp[1] * m.shape[2] * sp[2])
    t = float(mask.mean()) / d_eff if d_eff > 0 else math.inf
    return t if math.isfinite(t) and t > 0 else None


def _anisotropic_solver(taufactor: Any) -> Any:
    """TauFactor's AnisotropicSolver with the flux mask fixed for weights above 1.

    TauFactor 1.2 masks the flux of voxels whose neighbour weight sum exceeds 8, which is
    meant to find non-conducting voxels (weight infinity) but also drops every voxel when a
    neighbour weight ``(d_flow / d_other)**2`` is large (flow along the coarse axis), so the
    solve never converges. Here the mask is ``isinf`` instead.
    """
    import torch

    class _Solver(taufactor.AnisotropicSolver):
        def vertical_flux(self) -> Any:
            flux = self.field[:, 2:-1, 1:-1, 1:-1] - self.field[:, 1:-2, 1:-1, 1:-1]
            flux[torch.isinf(self.factor[:, 0:-1])] = 0
            flux[torch.isinf(self.factor[:, 1:])] = 0
            return flux

    return _Solver


# --------------------------------------------------------------------------- the job


@python_numbers
def iter_analyze(
    labels: Any,
    *,
    voxel_size: float | Sequence[float] | None = None,
    unit: str | None = None,
    class_names: Sequence[str] | dict[int, str] | None = None,
    phases: Sequence[int] | None = None,
    region: Any = None,
    surface: str = "faces",
    connectivity: bool = True,
    mean_size: bool = True,
    tortuosity: bool = True,
    size_distribution: bool = False,
    tpb_phases: Sequence[int] | None = None,
    tpb_correction: float = ISOTROPIC_STAIRCASE,
    outside: int | None = None,
    envelope: int | None = None,
    envelope_radius: float | None = None,
    device: str = "auto",
    max_voxels: int | None = MAX_VOXELS,
    block_slices: int | None = None,
    tortuosity_iter_limit: int = 20000,
    tortuosity_tol: float = 1e-2,
    cancel: CancelToken | None = None,
    _as_volume: bool = False,
) -> Generator[Progress, None, Microstructure]:
    """Generator form of :func:`analyze`: yields :class:`Progress`, returns a :class:`Microstructure`.

    See :func:`analyze` for the parameters.
    """
    from .io import class_names_of, open_volume
    from .provenance import provenance
    from .writer import refuse_unfinished

    record = provenance({"labels": labels})
    given = labels
    if isinstance(labels, (str, os.PathLike)):  # analyze("labels.zarr"), as segment and evaluate take paths
        labels = open_volume(labels)
    if voxel_size is None and (unit is None or normalize_unit(unit) != "voxel"):
        ndim = len(getattr(labels, "shape", ())) or 3  # a 2D section's file records two (review: ignored)
        found = pick_voxel_size(None, unit, voxel_size_of(given), ndim=min(max(ndim, 2), 3))  # the file's
        if found is not None:
            voxel_size, unit = found
    refuse_unfinished(labels, "labels")
    if class_names is None:  # what the file records (a predict output names its phases)
        class_names = class_names_of(labels)
    labels = _check_labels(labels)
    if voxel_size is None and unit is not None and normalize_unit(unit) != "voxel":
        log.warning(
            "unit %r without a voxel size, and the labels record none: the numbers are in voxel units; "
            "pass voxel_size for %s",
            unit,
            normalize_unit(unit),
        )
        unit = "voxel"
    u = normalize_unit(unit if unit is not None else ("voxel" if voxel_size is None else "um"))
    if len(labels.shape) == 3 and not _as_volume:  # (the section's own pass is a one-slice volume)
        (z0, z1), *plane = parse_region(region, labels.shape)
        if z1 - z0 == 1:  # one slice deep: no z faces or edges, the volume's estimators do not apply (review)
            log.warning(
                "the region is one slice deep (slice %d): measured as a 2D section (stereological estimates)", z0
            )
            labels, region = read_block(labels, (z0,), what=f"labels (slice {z0})"), tuple(plane)
    if len(labels.shape) == 2:
        section = yield from _iter_section(
            labels,
            voxel_size=voxel_size,
            unit=u,
            class_names=class_names,
            phases=phases,
            region=region,
            surface=surface,
            mean_size=mean_size,
            tpb_phases=tpb_phases,
            tpb_correction=tpb_correction,
            outside=outside,
            envelope=envelope,
            envelope_radius=envelope_radius,
            max_voxels=max_voxels,
            cancel=cancel,
        )
        section.provenance = record
        return section
    spacing = parse_voxel_size(voxel_size, 3)
    if surface not in ("faces", "mesh"):
        raise InputError(f"surface {surface!r} must be 'faces' (voxel faces / 1.5) or 'mesh' (marching cubes)")
    if tortuosity and not tortuosity_available():  # before the work, not after it
        raise InputError(TAUFACTOR_MISSING)
    if not (isinstance(tpb_correction, (int, float)) and tpb_correction > 0):
        raise InputError(f"tpb_correction {tpb_correction!r} must be a positive number (1.5, or 1 for raw counts)")
    if tpb_phases is not None:
        tpb_phases = tuple(int(p) for p in tpb_phases)
        if len(set(tpb_phases)) != 3:
            raise InputError(f"tpb_phases {tpb_phases!r} must be three distinct label values")
    outside = _envelope_outside(envelope, envelope_radius, outside)  # checks both
    if outside is not None and surface == "mesh":
        raise InputError("surface='mesh' counts the sample's edge as surface: use surface='faces' with outside=")
    reg = parse_region(region, labels.shape)
    shape = tuple(b - a for a, b in reg)
    n_vox = int(np.prod(shape, dtype=np.int64))
    whole = connectivity or mean_size or tortuosity or size_distribution
    if whole and max_voxels is not None and n_vox > max_voxels:
        gb = n_vox * (16 + (50 if tortuosity else 0)) / 1e9
        raise InputError(
            f"connectivity, mean size and tortuosity need the whole region in memory (~{gb:.1f} GB "
            f"for {n_vox:,} voxels, above the limit of {max_voxels:,}): analyse a sub-volume with "
            "region= (--region z0:z1,y0:y1,x0:x1), raise max_voxels, or turn them off "
            "(--fractions-only; in the Analyze widget untick Clusters and sizes, Tortuosity and Size distribution)"
        )
    plane = shape[1] * shape[2] if envelope is None else int(labels.shape[1]) * int(labels.shape[2])  # whole slices
    depth = _slab_depth(labels, plane * np.dtype(labels.dtype).itemsize, block_slices)
    starts = list(range(0, shape[0], depth))
    # progress in units of one slab; a phase's clusters and chords, and each tortuosity solve, weigh what they
    # take against the slab pass (QA h5: every step counted 1, so "23 %, about 24 s left" preceded 2 more
    # minutes of solves). A solve iterates about 8 L times (L: its axis's length) over the voxels; the slab
    # pass costs about 0.1 L_y of that per slab (measured on the 2-core Xeon, 48 x 192 x 192 and 96 x 256 x 256)
    whole_step = max(1, len(starts) // 5)
    tau_steps = [max(1, round(len(starts) * 0.1 * n)) if tortuosity and whole else 0 for n in shape]
    per_phase = (whole_step + sum(tau_steps)) if whole else 0
    total = len(starts) + 3 * per_phase  # three phases until they are known
    yield Progress(0, total, "reading labels")

    nb = 256 if np.dtype(labels.dtype).itemsize == 1 or labels.dtype == np.bool_ else _MAX_LABEL + 1
    counts = np.zeros(nb, dtype=np.int64)
    faces = np.zeros(nb, dtype=np.float64)
    mesh: dict[int, float] = {}
    tpb_count = np.zeros(3, dtype=np.int64)
    tpb_cross = np.zeros(3, dtype=np.int64)  # 4 x the TPB lines' crossings of the layers normal to z, y, x
    across = [_LayerClusters(), _LayerClusters()]  # the y and x edges' layers, streamed in z rows across slabs
    edge_len = [[np.zeros(n, dtype=np.float64) for n in shape] for _ in range(3)]  # per edge direction
    sides = np.zeros(nb, dtype=np.int64)  # labels on the region's four sides along z (a pillar's air)
    per_label: dict[int, list[np.ndarray]] = {}  # each label's voxel count per slice along z, y, x
    tpb_len = [np.zeros(n, dtype=np.float64) for n in shape]  # TPB length per slice along z, y, x
    full = np.empty(shape, dtype=np.uint8 if nb == 256 else np.uint16) if whole else None
    (z0, z1), (y0, y1), (x0, x1) = reg
    for i, a in enumerate(starts):
        check(cancel)
        b = min(a + depth, shape[0])
        stop = min(b + 1, shape[0])  # one slice of overlap: faces and edges between slabs
        what = f"labels (slices {z0 + a}..{z0 + stop - 1})"
        s = _read_labels(labels, slice(z0 + a, z0 + stop), reg, what, envelope, envelope_radius, outside)
        s = s.astype(full.dtype if full is not None else np.uint16, copy=False)
        n_new = b - a
        t = s[:n_new]
        slab_counts = np.bincount(t.ravel(), minlength=nb)[:nb]
        counts += slab_counts
        for v in np.flatnonzero(slab_counts):  # the profiles: each label's voxels per slice along each axis
            m = t == v
            plane_sum = m.sum(axis=0)
            z_, y_, x_ = per_label.setdefault(int(v), [np.zeros(n, dtype=np.int64) for n in shape])
            z_[a:b] = m.reshape(n_new, -1).sum(axis=1)
            y_ += plane_sum.sum(axis=1)
            x_ += plane_sum.sum(axis=0)
        for side in (t[:, 0, :], t[:, -1, :], t[:, :, 0], t[:, :, -1]):
            sides += np.bincount(side.ravel(), minlength=nb)[:nb]
        if surface == "faces":
            faces += _face_counts(s, n_new, spacing, nb, outside)
        else:
            for v in np.unique(s):
                mesh[int(v)] = mesh.get(int(v), 0.0) + _mesh_area(s, int(v), spacing)
        for k, e in enumerate(_tpb_edges(s, n_new, tpb_phases, outside)):
            tpb_count[k] += int(np.count_nonzero(e))
            if e.size:  # each edge to the slice its midpoint lies in, along each axis
                edge_len[k][0][a : a + e.shape[0]] += e.reshape(e.shape[0], -1).sum(axis=1) * spacing[k]
                edge_len[k][1][: e.shape[1]] += e.sum(axis=(0, 2)) * spacing[k]
                edge_len[k][2][: e.shape[2]] += e.sum(axis=(0, 1)) * spacing[k]
            if k == 0:  # z edges: their layers (z slices) lie whole in the slab
                tpb_cross[0] += 4 * _in_layer_clusters(e, 0)
            elif e.shape[0]:  # y and x edges: layers across slabs, continued from the previous slab's last row
                across[k - 1].add(np.moveaxis(e, k, 1))  # (z rows, layer, other axis)
        if full is not None:
            full[a:b] = s[:n_new]
        yield Progress(i + 1, total, f"slab {i + 1}/{len(starts)}")
        del s

    for k in (1, 2):
        tpb_cross[k] += 4 * across[k - 1].count
    # crossings per edge direction: the profiles keep the edges' distribution, scaled to them
    for k in range(3):
        scale = tpb_cross[k] / 4 / tpb_count[k] if tpb_count[k] else 0.0
        for ax in range(3):
            tpb_len[ax] += edge_len[k][ax] * scale
    n_out = int(counts[outside]) if outside is not None and 0 <= outside < nb else 0
    if outside is not None and n_out == 0:
        if envelope is None and outside == 0:  # segment's no-data label, the widget's default: a full field of view
            log.info("outside=0: no voxel holds label 0, so the whole region is the sample")
        elif envelope is None:
            log.warning(
                "outside=%d: no voxel holds label %d, so nothing is outside the sample (a typo?)", outside, outside
            )
        elif not (0 <= envelope < nb and counts[envelope]):
            log.warning(
                "envelope=%d: no voxel holds label %d, so nothing surrounds the sample (a typo?)", envelope, envelope
            )
        else:
            log.warning("envelope=%d: the sample's envelope holds the whole region; nothing lies beyond it", envelope)
    n_data = n_vox - n_out  # the sample: the region less its voxels outside
    if n_data == 0:
        raise InputError(f"every voxel of the region is outside the sample (label {outside})")
    present = [int(v) for v in np.flatnonzero(counts) if int(v) != outside]
    if outside is None and counts[0] and phases is None:
        log.warning(
            "label 0 holds %.0f %% of the region: if it is outside the sample (segment's nodata), pass outside=0 "
            "(--outside 0) so that it is not a phase",
            100 * counts[0] / n_vox,
        )
    if outside is not None and 0 <= outside < nb:
        sides[outside] = 0
    on_sides = int(sides.sum())  # with outside=None, label 0 too: the share below is of every side voxel
    if outside is None:
        sides[0] = 0  # label 0 on the sides is most likely no data: the warning above names outside=0 for it
    if envelope is None and len(present) > 1 and on_sides and sides.max() >= ENVELOPE_HINT * on_sides:
        top = int(sides.argmax())
        log.warning(
            "label %d holds %.0f %% of the region's sides: if the sample stands in it (a pillar in air), pass "
            "envelope=%d (--envelope %d) so that it is not counted as the sample's; if it is the sample's "
            "matrix (pores or particles inside it), the numbers stand as they are",
            top,
            100 * sides[top] / on_sides,
            top,
            top,
        )
    if outside is not None and n_out and len(present) < 2:
        log.warning(
            "outside=%d leaves %s in the sample: label %d (%.0f %% of the region) is counted as outside it, "
            "not as a phase; if it is a phase (the pores of a 0/1 mask), pass outside=None (no --outside; "
            "in the Analyze widget untick 'label %d is outside the sample')",
            outside,
            f"one phase ({present[0]})" if present else "no phase",
            outside,
            100 * n_out / n_vox,
            outside,
        )
    if tpb_phases is None and len(present) > 3:
        small = [p for p in present if counts[p] < 1e-3 * n_data]
        log.warning(
            "the labels hold %d phases %s%s: no triple-phase boundary density (it needs three); pass the three "
            "(tpb_phases=(a, b, c), --tpb-phases A B C)",
            len(present),
            present,
            f" ({', '.join(map(str, small))} under 0.1 % of the voxels)" if small else "",
        )
    chosen = present if phases is None else [int(p) for p in phases]
    missing = [p for p in chosen if p not in present]
    if phases is not None and missing:
        log.warning("phases %s are absent from the labels (present: %s): their numbers are 0", missing, present)
    absent_tpb = [p for p in tpb_phases or () if p not in present]
    if absent_tpb:
        log.warning(
            "tpb_phases %s: %s absent from the labels (present: %s), so the TPB density is 0",
            list(tpb_phases or ()),
            absent_tpb,
            present,
        )
    names = _names(chosen, class_names, present)
    volume = n_data * float(np.prod(spacing))
    surf_factor = 1.0 / ISOTROPIC_STAIRCASE if surface == "faces" else 1.0

    tpb_density = tpb_edges = None
    tpb_set: tuple[int, ...] | None = tpb_phases
    missing = [p for p in tpb_phases or () if p not in present]
    if missing:  # a TPB density of 0 from a typo (--tpb-phases 1 2 9), not from the material
        log.warning(
            "tpb_phases %s: no voxel holds label %s (labels present: %s), so the TPB density is 0; check the labels",
            list(tpb_phases or ()),
            ", ".join(map(str, missing)),
            present,
        )
    if tpb_phases is None and len(present) == 3:
        tpb_set = tuple(present)
    elif tpb_phases is None:
        tpb_set = None
    if tpb_set is not None:
        tpb_edges = int(tpb_count.sum())
        # crossings of the layers normal to z x dz, ...: |u_z| + |u_y| + |u_x| times a line's length
        length = float((tpb_cross / 4 * np.array(spacing)).sum())
        tpb_density = length / tpb_correction / volume
        crossings = int(tpb_cross.sum()) // 4
        if crossings and tpb_edges > TPB_FRAGMENTED * crossings:
            log.warning(
                "the TPB edges (%d) are %.0f times the TPB lines' crossings of the voxel layers (%d; about 1.0-1.5 "
                "for lines a few voxels apart): the three phases meet at the voxel scale (noisy or fragmented "
                "labels), where lines merge and the TPB density (%.4g) is uncertain; clean the labels first, "
                "or compare tpb_edges",
                tpb_edges,
                tpb_edges / crossings,
                crossings,
                tpb_density,
            )

    stats = {}
    for p in chosen:
        area = (faces[p] * surf_factor) if surface == "faces" else mesh.get(p, 0.0)
        stats[p] = PhaseStats(
            label=p,
            name=names[p],
            voxels=int(counts[p]) if p < nb else 0,
            volume_fraction=float(counts[p] / n_data) if p < nb else 0.0,
            specific_surface_area=float(area / volume) if p < nb else 0.0,
        )

    total = len(starts) + len(chosen) * per_phase
    step = len(starts)
    dev = None
    amg = False
    amg_used: list[str] = []  # the solves the multigrid solver took ("2.y")
    if whole:
        dev = _tau_device(device) if tortuosity else None
        amg = dev is not None and dev.type == "cpu" and amg_available()  # TauFactor on a GPU, or without pyamg
        # said from 30 s (with TauFactor the built-in sample's 1.8 M voxels took 2 minutes, unsaid below 128^3)
        cpu_s = tortuosity_cpu_seconds(shape, len(chosen))
        if tortuosity and dev.type == "cpu" and (n_vox > _SLOW_CPU_SOLVE or cpu_s > 30):
            log.warning(
                "tortuosity of %s voxels on the CPU takes long (about %s for %d phases x 3 axes here): use a GPU "
                "(device='auto'), a sub-volume (region=), or tortuosity=False (--no-tortuosity)",
                f"{n_vox:,}",
                f"{cpu_s / 60:.0f} min" if cpu_s >= 90 else f"{cpu_s:.0f} s",
                len(chosen),
            )
        cut = full == outside if outside is not None and mean_size and n_out else None
        for p in chosen:
            check(cancel)
            st = stats[p]
            yield Progress(step, total, f"phase {p} ({st.name}): clusters and chords")
            mask = full == p
            if connectivity or tortuosity:
                largest, perc = _clusters(mask)
                if connectivity:
                    st.largest_cluster_fraction, st.percolates = largest, perc
            if mean_size:
                length, n = _chords(mask, spacing, cut=cut)
                st.mean_size = length / n if n else None
            if size_distribution:
                yield Progress(step, total, f"phase {p} ({st.name}): size distribution")
                st.size_distribution = _size_distribution(mask, spacing, cancel=cancel)
            step += whole_step
            if tortuosity:
                taus: dict[str, float | None] = {}
                for ax, name in enumerate(AXES):
                    yield Progress(step, total, f"phase {p} ({st.name}): tortuosity along {name}")
                    taus[name] = None
                    if perc[name] and shape[ax] > 2 and amg and _amg_chosen(mask, ax):
                        amg_used.append(f"{p}.{name}")  # named in methods
                        taus[name] = _amg_solve(mask, ax, spacing, cancel)
                    elif perc[name] and shape[ax] > 2:
                        taus[name] = _taufactor_solve(
                            mask, ax, spacing, dev, cancel, tortuosity_iter_limit, tortuosity_tol
                        )
                    step += tau_steps[ax]
                st.tortuosity = taus
            del mask
    methods = {
        "volume_fraction": (
            "voxel count / region voxels" if outside is None else f"voxel count / region voxels not labelled {outside}"
        )
        + (
            ""
            if envelope is None
            else f" (label {envelope} beyond the sample's envelope per z slice, "
            + ("its convex hull" if envelope_radius is None else f"closed by {envelope_radius:g} voxels")
            + f", counted as {outside})"
        ),
        "specific_surface_area": (
            "voxel faces x area / 1.5 (isotropic staircase correction)"
            if surface == "faces"
            else "marching cubes (scikit-image, Lewiner) on the phase mask"
        ),
        "connectivity": "6-connected clusters (scipy.ndimage.label); percolation: one cluster touches both faces",
        "size_distribution": (
            f"continuous size distribution (Münch & Holzer 2008): share covered by inscribed balls, {SIZE_STEPS} "
            "diameters, Euclidean distance maps"
            if size_distribution
            else None
        ),
        "mean_size": "mean chord length along z, y, x pooled, chords touching the region faces left out"
        + ("" if outside is None else f" (and those ending at label {outside})"),
        "tortuosity": (
            None
            if dev is None
            else f"steady-state diffusion, tau = eps D / D_eff (TauFactor's finite volumes), TauFactor on {dev}"
            + (
                f"; {', '.join(amg_used)} by algebraic multigrid (pyamg) + conjugate gradients to 1e-8 relative "
                "residual (thin phases along long axes, where it is faster)"
                if amg_used
                else ""
            )
        ),
        "tpb_density": (
            f"crossings of the voxel layers (8-connected clusters of the edges shared by all three phases) x "
            f"layer thickness / {tpb_correction:g}"
            if tpb_set is not None
            else None
        ),
    }
    yield Progress(total, total, "done")
    return Microstructure(
        voxel_size=spacing,
        unit=u,
        shape=shape,
        region=reg,
        phases=stats,
        tpb_density=tpb_density,
        tpb_phases=tpb_set,
        tpb_edges=tpb_edges,
        methods=methods,
        sample_voxels=n_data if n_out else None,
        profiles=_profiles(
            per_label, shape, chosen, outside, reg, spacing, tpb_len if tpb_set is not None else None, tpb_correction
        ),
        provenance=record,
    )


def _iter_section(
    labels: Any,
    *,
    voxel_size: Any,
    unit: str,
    region: Any,
    surface: str,
    tpb_correction: float,
    **kw: Any,
) -> Generator[Progress, None, Microstructure]:
    """:func:`iter_analyze` of a 2D section: the 3D numbers of an isotropic structure by stereology.

    The section is measured as a volume one voxel deep, whose faces along z do not count: its pixel
    count per phase (the area fraction ``A_A``, which equals ``V_V``: Delesse), the phase boundaries'
    crossings of the pixel rows and columns per length of them (``P_L``), the triple points (clusters
    of pixel corners where the three phases meet, ``Q_A`` per area) and the chords along y and x. Then
    ``S_V = 2 P_L``, ``L_A = (pi / 2) P_L``, ``L_V = 2 Q_A`` (Underwood, Quantitative Stereology, 1970),
    and the mean chord is the 3D mean intercept. Connectivity, tortuosity and the size distribution
    need a volume: a section cannot tell them (None).
    """
    if surface != "faces":
        raise InputError(
            f"surface={surface!r}: a 2D section's boundaries are counted on its pixel grid (surface='faces')"
        )
    if voxel_size is not None and not isinstance(voxel_size, (int, float)) and len(voxel_size) == 3:
        voxel_size = tuple(voxel_size)[1:]  # a (z, y, x) size: the section's pixels are its y and x
    pixel = parse_voxel_size(voxel_size, 2)
    reg = parse_region(region, labels.shape)
    image = _as_small(read_block(labels, ...), "labels")[None]  # one section: in memory
    m = yield from iter_analyze(
        image,
        voxel_size=(1.0, *pixel),  # any depth: it cancels from every number
        unit=unit,
        region=((0, 1), *reg),
        surface="faces",
        connectivity=False,
        tortuosity=False,
        size_distribution=False,
        tpb_correction=tpb_correction,
        _as_volume=True,
        **kw,
    )
    length_per_area = {}
    for k, st in m.phases.items():
        st.specific_surface_area *= ISOTROPIC_STAIRCASE  # faces per area is 2 P_L: no staircase correction
        length_per_area[k] = st.specific_surface_area * math.pi / 4
    to_lv = 2 * tpb_correction  # the volume's count divides by tpb_correction; L_V = 2 Q_A
    if m.tpb_density is not None:
        m.tpb_density *= to_lv
    profiles = {a: m.profiles[a] for a in ("y", "x")}
    for p in profiles.values():
        if "tpb_density" in p:
            p["tpb_density"] = [v * to_lv for v in p["tpb_density"]]
    area = m.sample_voxels if m.sample_voxels is not None else int(np.prod(m.shape))
    q_a = None if m.tpb_density is None else m.tpb_density / 2
    methods = dict(m.methods)
    methods.update(
        section="a 2D section: 3D numbers of an isotropic, uniform structure by stereology (V_V = A_A, S_V = 2 P_L, "
        "L_V = 2 Q_A); connectivity, tortuosity and size distribution need a volume",
        volume_fraction=methods["volume_fraction"].replace("voxel", "pixel").replace("region", "section")
        + " (area fraction A_A = V_V)",
        specific_surface_area="S_V = 2 P_L: crossings of the phase boundaries with the pixel rows and columns per "
        "length of them (P_L), from a section",
        mean_size="mean chord length along y and x pooled (the 3D mean intercept of an isotropic structure), chords "
        "touching the section's edges left out"
        + (" (and those ending at outside)" if kw.get("outside") is not None else ""),
        connectivity=None,
        tortuosity=None,
        size_distribution=None,
    )
    if m.tpb_density is not None:
        methods["tpb_density"] = (
            "L_V = 2 Q_A: triple points (8-connected clusters of the pixel corners where the three phases meet) per "
            "area of the section"
        )
    return replace(
        m,
        voxel_size=pixel,
        shape=m.shape[1:],
        region=m.region[1:],
        methods=methods,
        profiles=profiles,
        section={
            "boundary_length_per_area": length_per_area,
            "triple_points_per_area": q_a,
            "triple_points": None if q_a is None else round(q_a * area * float(np.prod(pixel))),
        },
    )


def tortuosity_cpu_seconds(shape: Sequence[int], phases: int = 3) -> float:
    """About how long TauFactor takes on one CPU core for ``phases`` phases x 3 axes of a region of ``shape``.

    About 55 ns per voxel and unit of axis length per phase (a solve iterates about 8 L times; QA h5,
    2-core Xeon, 48 x 192 x 192 and 96 x 256 x 256). A GPU takes a small fraction of it; on the CPU the
    solves :func:`_amg_chosen` gives to the multigrid solver take less.

    >>> round(tortuosity_cpu_seconds((48, 192, 192)))
    126
    """
    n = math.prod(int(v) for v in shape)
    return _CPU_TAU_S * n * sum(int(v) for v in shape) * phases


def _tau_device(device: str) -> Any:
    from .device import resolve_device

    return resolve_device(device)


@python_numbers
def analyze(
    labels: Any,
    *,
    voxel_size: float | Sequence[float] | None = None,
    unit: str | None = None,
    class_names: Sequence[str] | dict[int, str] | None = None,
    phases: Sequence[int] | None = None,
    region: Any = None,
    surface: str = "faces",
    connectivity: bool = True,
    mean_size: bool = True,
    tortuosity: bool = True,
    size_distribution: bool = False,
    tpb_phases: Sequence[int] | None = None,
    tpb_correction: float = ISOTROPIC_STAIRCASE,
    outside: int | None = None,
    envelope: int | None = None,
    envelope_radius: float | None = None,
    device: str = "auto",
    max_voxels: int | None = MAX_VOXELS,
    block_slices: int | None = None,
    tortuosity_iter_limit: int = 20000,
    tortuosity_tol: float = 1e-2,
    cancel: CancelToken | None = None,
    progress: Any = None,
) -> Microstructure:
    """Measure the microstructure of a 3D label volume, or of a 2D section, in physical units.

    A 2D section (``labels`` of shape (Y, X), or a region one slice deep) gives its area fractions,
    boundary length per area, triple points and mean chords, and the 3D numbers of an isotropic
    structure by stereology (:attr:`Microstructure.section`, docs/analyze.md); ``connectivity``,
    ``tortuosity`` and ``size_distribution`` need a volume and are left out for it.

    Parameters
    ----------
    labels : array-like of shape (Z, Y, X) or (Y, X)
        Integer labels, one value per phase (numpy, dask, zarr, h5py; read slab by slab).
    voxel_size : float or (z, y, x), optional
        Voxel size in ``unit``; one number means isotropic. None: what the labels' file
        records (an array from :func:`~napari_xrayseg.open_volume`, e.g. an output of
        ``segment``; see :func:`~napari_xrayseg.core.io.read_voxel_size`), else 1 (voxel units).
    unit : str, optional
        Length unit of ``voxel_size`` ("nm", "um", "mm", ...). Default: ``"um"`` when a
        voxel size is given, else the file's, else ``"voxel"``. Without ``voxel_size``, the
        unit to convert the file's voxel size to; ``"voxel"`` ignores the file's.
    class_names : list of str or dict, optional
        Phase names: ``{label: name}``, or a list, one per nonzero phase present in the order
        of their label values, or one per label 1, 2, ... (a model's ``class_names``). Default:
        the label value.
    phases : sequence of int, optional
        Label values to report (default: every value present, 0 included if present,
        ``outside`` left out). Fractions are relative to the whole region, less ``outside``.
    region : str or sequence, optional
        Sub-volume to analyse, e.g. ``"0:128,:,:"`` (see :func:`parse_region`).
    surface : {"faces", "mesh"}
        Surface-area estimator (see the module docstring).
    connectivity, mean_size, tortuosity : bool
        Compute these (they need the whole region in memory; tortuosity needs TauFactor).
    size_distribution : bool
        Also each phase's continuous size distribution and its median diameter ``d50``
        (``PhaseStats.size_distribution``; whole region in memory, about 13 distance maps
        per phase: opt-in).
    tpb_phases : sequence of three int, optional
        The phases of the TPB (default: the three phases when exactly three are present;
        otherwise no TPB).
    tpb_correction : float
        Divisor of the counted TPB length (1.5 for isotropic lines; 1 = the uncorrected
        length of the layer crossings).
    outside : int, optional
        The label of voxels outside the sample, e.g. 0 where ``segment`` met no data (outside a
        reconstruction's circular field of view, ``nodata=``). They are not a phase: fractions,
        specific surface areas and the TPB density are per volume of the sample, and the
        sample's edge is not a surface; the mean size leaves out chords that end at them (cut
        short, as at the region's faces). Connectivity and tortuosity see them as a solid:
        along y and x a circular field of view's edge cuts every path, so analyse a box inside
        it (``region=``) for those.
    envelope : int, optional
        The label of what surrounds the sample, e.g. 1 for a pillar standing in air that the
        segmentation labels as pore. In each z slice the voxels beyond the sample's envelope
        (:func:`sample_envelope`: the convex hull of its other phases, or with
        ``envelope_radius`` their closing; debris in the air is left out) count as ``outside``
        (0 when ``outside`` is None), so the numbers are the pillar's: its porosity, its inner
        surfaces, not its outer face. Connectivity and tortuosity along y and x then end at
        the pillar's side, as transport does.
    envelope_radius : float, optional
        For a sample that is not convex: the envelope is its phases closed by a disc of this
        radius in voxels (surface pores up to twice as wide count as the sample's), not their
        convex hull (the default, for a pillar).
    device : str
        Where TauFactor runs: "auto" (default: CUDA if present, else the CPU), "cpu", "cuda", "cuda:N".
    max_voxels : int or None
        Largest region analysed in memory (connectivity, mean size, tortuosity).
    block_slices : int, optional
        Slices per slab of the slab-wise pass (default: about 32 MB per slab).
    tortuosity_iter_limit : int
        Most TauFactor iterations per solve.
    tortuosity_tol : float
        TauFactor convergence criterion (relative spread of the flux between layers).
    cancel : CancelToken, optional
        Checked at every slab, phase, and every 500 solver iterations.
    progress : callable, optional
        Called with each :class:`Progress`.

    Returns
    -------
    Microstructure

    Raises
    ------
    InputError
        For bad labels or parameters, or a region too large for the in-memory quantities.
    Cancelled
        If ``cancel`` was set.

    Examples
    --------
    >>> import numpy as np
    >>> slab = np.ones((10, 8, 8), dtype=np.uint8); slab[4:] = 2
    >>> m = analyze(slab, voxel_size=0.5, tortuosity=False)
    >>> m.phases[1].volume_fraction, m.phases[2].mean_size
    (0.4, None)
    """
    return drain(
        iter_analyze(
            labels,
            voxel_size=voxel_size,
            unit=unit,
            class_names=class_names,
            phases=phases,
            region=region,
            surface=surface,
            connectivity=connectivity,
            mean_size=mean_size,
            tortuosity=tortuosity,
            size_distribution=size_distribution,
            tpb_phases=tpb_phases,
            tpb_correction=tpb_correction,
            outside=outside,
            envelope=envelope,
            envelope_radius=envelope_radius,
            device=device,
            max_voxels=max_voxels,
            block_slices=block_slices,
            tortuosity_iter_limit=tortuosity_iter_limit,
            tortuosity_tol=tortuosity_tol,
            cancel=cancel,
        ),
        progress,
    )


# --------------------------------------------------------------------------- TPB network


@python_numbers
def tpb_points(
    labels: Any,
    *,
    phases: Sequence[int] | None = None,
    region: Any = None,
    max_points: int | None = 200_000,
    seed: int = 0,
    block_slices: int | None = None,
    outside: int | None = None,
    envelope: int | None = None,
    envelope_radius: float | None = None,
    cancel: CancelToken | None = None,
) -> np.ndarray:
    """Midpoints of the TPB voxel edges, in voxel coordinates of ``labels`` (for a Points layer).

    Parameters
    ----------
    labels : array-like of shape (Z, Y, X)
        Three-phase labels.
    phases : sequence of three int, optional
        The TPB phases (default: edges where three or more distinct labels meet).
    region : optional
        Sub-volume (see :func:`parse_region`); the points stay in full-volume coordinates.
    max_points : int or None
        Keep at most this many points (an even random subset, seeded) so a viewer stays fluid.
    seed : int
        Seed of that subset.
    block_slices : int, optional
        Slices per slab.
    outside : int, optional
        The label of voxels outside the sample (see :func:`analyze`): an edge with such a
        voxel around it is the sample's edge, not a TPB. The points are then the edges that
        :func:`analyze` with the same ``outside`` counts.
    envelope, envelope_radius : optional
        As for :func:`analyze`.
    cancel : CancelToken, optional
        Checked at every slab.

    Returns
    -------
    numpy.ndarray of shape (N, 3)
        (z, y, x) of each edge's midpoint: a voxel-centre coordinate along the edge and
        a half-integer across it.

    Examples
    --------
    >>> lab = np.array([[[1, 2], [3, 3]], [[1, 2], [3, 3]]])
    >>> tpb_points(lab).tolist()
    [[0.0, 0.5, 0.5], [1.0, 0.5, 0.5]]
    >>> tpb_points(np.array([[[1, 2], [3, 0]]] * 2), outside=0).tolist()
    []
    """
    outside = _envelope_outside(envelope, envelope_radius, outside)
    labels = _check_labels(labels)
    reg = parse_region(region, labels.shape)
    (z0, z1), (y0, y1), (x0, x1) = reg
    ph = None if phases is None else tuple(int(p) for p in phases)
    nz = z1 - z0
    plane = (y1 - y0) * (x1 - x0) if envelope is None else int(labels.shape[1]) * int(labels.shape[2])
    depth = _slab_depth(labels, plane * np.dtype(labels.dtype).itemsize, block_slices)
    out = []
    for a in range(0, nz, depth):
        check(cancel)
        b = min(a + depth, nz)
        stop = min(b + 1, nz)
        s = _read_labels(labels, slice(z0 + a, z0 + stop), reg, "labels", envelope, envelope_radius, outside)
        ez, ey, ex = _tpb_edges(s, b - a, ph, outside)
        off = np.array([z0 + a, y0, x0], dtype=np.float64)
        for e, shift in ((ez, (0.0, 0.5, 0.5)), (ey, (0.5, 0.0, 0.5)), (ex, (0.5, 0.5, 0.0))):
            idx = np.argwhere(e)
            if idx.size:
                out.append(idx + off + np.array(shift))
    pts = np.concatenate(out) if out else np.zeros((0, 3))
    order = np.lexsort((pts[:, 2], pts[:, 1], pts[:, 0])) if len(pts) else np.arange(0)
    pts = pts[order]
    if max_points is not None and len(pts) > max_points:
        keep = np.sort(np.random.default_rng(seed).choice(len(pts), size=max_points, replace=False))
        pts = pts[keep]
    return pts


# --------------------------------------------------------------------------- uncertainty


def _quantities(m: Microstructure) -> dict[str, float | None]:
    """Flat ``{"1.volume_fraction": v, ..., "tpb_density": v}`` of every scalar number."""
    out: dict[str, float | None] = {}
    for k, p in m.phases.items():
        out[f"{k}.volume_fraction"] = p.volume_fraction
        out[f"{k}.specific_surface_area"] = p.specific_surface_area
        out[f"{k}.largest_cluster_fraction"] = p.largest_cluster_fraction
        out[f"{k}.mean_size"] = p.mean_size
        for a in AXES:
            out[f"{k}.tortuosity_{a}"] = None if p.tortuosity is None else p.tortuosity[a]
    out["tpb_density"] = m.tpb_density
    return out


def _absent_as_zero(q: dict[str, float | None], m: Microstructure, other: Microstructure) -> dict[str, float | None]:
    """``q`` with the numbers of phases that only ``other`` has, as 0.

    Fraction and surface 0: a phase the segmentation missed is an error of -100 %, not "n/a";
    a TPB density of 0 where a phase of ``other``'s triple boundary is absent here.
    """
    for k in other.phases:
        if k not in m.phases:
            q[f"{k}.volume_fraction"] = q[f"{k}.specific_surface_area"] = 0.0
    if q.get("tpb_density") is None and other.tpb_density is not None:
        if any(k not in m.phases for k in other.tpb_phases or ()):
            q["tpb_density"] = 0.0
    return q


def same_shape(items: Sequence[Any], names: Sequence[str]) -> None:
    """Raise unless the label volumes among ``items`` all have one shape, and the :func:`analyze` results one region.

    Numbers compared between volumes of different shapes look right and mean nothing. A
    result and a volume are not compared (the result's shape is its region's).
    """
    for kind in (True, False):
        group = [
            (n, tuple(int(v) for v in x.shape)) for n, x in zip(names, items) if isinstance(x, Microstructure) is kind
        ]
        for name, shape in group[1:]:
            if shape != group[0][1]:
                raise InputError(
                    f"{name} shape {shape} does not match {group[0][0]} shape {group[0][1]}: "
                    "give labels of the same volume (and the same region)"
                )


def compare_microstructure(
    pred: Microstructure | Any, truth: Microstructure | Any, **kwargs: Any
) -> dict[str, dict[str, float | None]]:
    """How the segmentation error moves each microstructure number: prediction vs ground truth.

    Parameters
    ----------
    pred, truth : Microstructure or array-like
        Results of :func:`analyze`, or label volumes (then analysed with ``**kwargs``,
        e.g. the same ``voxel_size`` and ``region``: the annotated reference region).
    **kwargs
        Passed to :func:`analyze` for arrays.

    Returns
    -------
    dict
        ``{quantity: {"pred", "truth", "error", "error_percent"}}`` with quantities named
        ``"<label>.<name>"`` (e.g. ``"2.specific_surface_area"``) and ``"tpb_density"``;
        ``error = pred - truth``, ``error_percent = 100 * error / truth``; None where either
        side is n/a (or the truth is 0 for the percentage).

    Examples
    --------
    >>> t = np.ones((6, 6, 6), dtype=np.uint8); t[3:] = 2
    >>> p = t.copy(); p[2] = 2
    >>> c = compare_microstructure(p, t, tortuosity=False)
    >>> round(c["1.volume_fraction"]["error_percent"], 1)
    -33.3
    """
    same_shape([pred, truth], ["prediction", "truth"])
    mp = pred if isinstance(pred, Microstructure) else analyze(pred, **kwargs)
    mt = truth if isinstance(truth, Microstructure) else analyze(truth, **kwargs)
    qp, qt = _absent_as_zero(_quantities(mp), mp, mt), _absent_as_zero(_quantities(mt), mt, mp)
    out = {}
    for k in sorted(set(qp) | set(qt), key=lambda s: (s == "tpb_density", s)):
        a, b = qp.get(k), qt.get(k)
        err = None if a is None or b is None else a - b
        pct = None if err is None or not b else 100.0 * err / b
        out[k] = {"pred": a, "truth": b, "error": err, "error_percent": pct}
    return out


def microstructure_interval(
    results: Sequence[Microstructure | Any], **kwargs: Any
) -> dict[str, dict[str, float | int | None]]:
    """An interval for each number from several segmentations of the same volume.

    Use it where there is no ground truth: analyse the labels of each orthoplane axis,
    each test-time augmentation or each model of an ensemble; the spread of a number
    over them bounds how much it depends on the segmentation.

    Parameters
    ----------
    results : sequence of Microstructure or array-like
        At least two results of :func:`analyze` or label volumes (analysed with ``**kwargs``).
    **kwargs
        Passed to :func:`analyze` for arrays.

    Returns
    -------
    dict
        ``{quantity: {"mean", "std", "min", "max", "n"}}`` (std with ddof=1); None where no
        result has the number.

    Raises
    ------
    InputError
        With fewer than two results.
    """
    if len(results) < 2:
        raise InputError(f"an interval needs at least two segmentations, got {len(results)}")
    same_shape(results, [f"segmentation {i + 1}" for i in range(len(results))])
    ms = [r if isinstance(r, Microstructure) else analyze(r, **kwargs) for r in results]
    qs = [_quantities(m) for m in ms]
    for q, m in zip(qs, ms):  # a phase one segmentation lacks is 0 there, not left out (QA s45: [0.25, 0.25])
        for other in ms:
            _absent_as_zero(q, m, other)
    keys = sorted({k for q in qs for k in q}, key=lambda s: (s == "tpb_density", s))
    out: dict[str, dict[str, float | int | None]] = {}
    for k in keys:
        vals = np.array([q[k] for q in qs if q.get(k) is not None], dtype=np.float64)
        if vals.size == 0:
            out[k] = {"mean": None, "std": None, "min": None, "max": None, "n": 0}
            continue
        out[k] = {
            "mean": float(vals.mean()),
            "std": float(vals.std(ddof=1)) if vals.size > 1 else None,
            "min": float(vals.min()),
            "max": float(vals.max()),
            "n": int(vals.size),
        }
    return out
