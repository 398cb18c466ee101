"""Data-side code that never goes to the Hub: image/DICOM IO, datasets, SynthCXR, segmentation cache,
report labeler and grounding. Submodules are imported explicitly; this file stays import-free so that the
pure-Python parts (e.g. the report labeler) do not pull in torch."""
