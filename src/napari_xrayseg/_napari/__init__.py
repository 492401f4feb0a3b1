"""napari widgets and manifest targets; the only part of the package that imports Qt/napari."""
