"""Dataset loaders that turn real report datasets (R2Gen annotation.json, MIMIC-CXR-JPG, JSONL/image folders) and
SynthCXR into TRL's conversational format: `images` + `messages`, plus `id`, `report` and `labels` columns.

Submodules are imported explicitly (`from asarg.processing.loaders.r2gen import load_r2gen`), so that importing this
package does not pull in `datasets`."""
