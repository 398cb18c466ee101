"""Where a model comes from: the embedded default model, a local folder or a Hub id.

The default model ships inside the package (`asarg/default_model/`: weights, config, processor, model card), without
copies of the remote-code files, so the repository keeps one copy of `modeling_asarg`. `default_model_path()`
assembles a complete, loadable Hub-layout folder once per package version and weights (the weights and config plus
the installed `modeling_asarg/*_asarg.py`) in a cache folder, so the owner's line
`AutoModel.from_pretrained(path, trust_remote_code=True)` works on it as on a published repository.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import os
import shutil
from pathlib import Path

from .checkpoints import write_checksums

# Package data of `asarg` (asarg/default_model/), found without importing any module of the CLI layer.
EMBEDDED = Path(str(importlib.resources.files("asarg") / "default_model"))
REMOTE_CODE = (
    "configuration_asarg.py",
    "cxas_asarg.py",
    "modeling_asarg.py",
    "processing_asarg.py",
    "segmenter_asarg.py",
)


def remote_code_files() -> list[Path]:
    """The Hub files of the installed `modeling_asarg` package (what `auto_map` in config.json names)."""
    import modeling_asarg

    folder = Path(modeling_asarg.__file__).parent
    return [folder / name for name in REMOTE_CODE]


def _cache_root() -> Path:
    base = os.environ.get("ASARG_CACHE") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "asarg")
    return Path(base).expanduser()


def _fingerprint(files: list[Path]) -> str:
    digest = hashlib.sha256(b"layout 2")  # bump when the assembled folder's layout changes
    for path in sorted(files, key=lambda p: p.name):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def default_model_path() -> str:
    """A loadable folder of the embedded default model (assembled on first use; atomic, so concurrent first uses
    are safe)."""
    if not (EMBEDDED / "model.safetensors").is_file():
        raise FileNotFoundError(
            f"The embedded default model is missing ({EMBEDDED / 'model.safetensors'}). Reinstall asarg, or pass "
            "--model DIR_OR_HUB_ID (an ASaRG checkpoint folder or a Hub id)."
        )
    files = [p for p in EMBEDDED.iterdir() if p.is_file()] + remote_code_files()
    target = _cache_root() / f"default-model-{_fingerprint(files)}"
    if (target / "model.safetensors").is_file():
        return str(target)
    staging = target.with_name(f"{target.name}.{os.getpid()}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for path in files:
        shutil.copy2(path, staging / path.name)

    write_checksums(staging)  # now covering the remote-code files too
    try:
        staging.rename(target)
    except OSError:  # another process assembled it first: theirs is identical
        shutil.rmtree(staging, ignore_errors=True)
    return str(target)


def resolve_model(model: str | None) -> str:
    """`None` -> the embedded default model; anything else (a folder or a Hub id) is returned as given."""
    return default_model_path() if model is None else model


__all__ = ["EMBEDDED", "default_model_path", "remote_code_files", "resolve_model"]
