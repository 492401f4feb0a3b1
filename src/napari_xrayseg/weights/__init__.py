"""Weights shipped with the package: the pretrained start of ``train(..., init="pretrained")``.

``unet3d-medium-pretrained.safetensors`` is made by ``benchmarks/pretrain.py`` (docs/accuracy.md
has the command and what it measures); it is read with ``load_model`` like any model file.
"""
