"""Pure core of napari-xrayseg: numpy, dask, zarr, torch and MONAI; never Qt or napari."""
