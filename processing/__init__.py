"""Data in: image/DICOM IO, dataset loaders, SynthCXR, the segmentation cache and its collator.

Installed as `asarg.processing`. Submodules are imported explicitly; this file stays import-free.
"""
