"""`asarg push`: a checkpoint folder -> the exact Hub folder (weights, remote code, processor, model card) -> the Hub.

    asarg push runs/my-model org/asarg --dry-run --out hub-folder   # write the folder, list what would go up
    asarg push runs/my-model org/asarg [--private] [--revision BRANCH]
    asarg push default org/asarg                                   # the embedded default model

The folder is what `AutoModel.from_pretrained(repo, trust_remote_code=True)` needs: `model.safetensors`, `config.json`
(with `auto_map`), `generation_config.json`, the processor and tokenizer files, the three remote-code files of the
installed `modeling_asarg`, `checksums.sha256` and `README.md`, a model card whose YAML metadata (`model-index`)
carries the CE-F1 of `scores.json` (written by `asarg reproduce --default-model`, or given with `--scores`).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

# Files a checkpoint folder contributes (optimizer state, training_args.bin and old remote code stay behind).
CHECKPOINT_FILES = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "processor_config.json",
    "preprocessor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "scores.json",
    "ablation.md",
)
CXAS_ARCHITECTURE = "cxas_unet_resnet50"


def _copy_checkpoint(checkpoint: Path, staging: Path) -> dict:
    """Copy the shipped files; `config.json` gets the current `auto_map` (the owner's line gives the generating model)."""
    from modeling_asarg.modeling_asarg import AUTO_MAP

    from .models import remote_code_files

    for name in CHECKPOINT_FILES:
        if (checkpoint / name).is_file():
            shutil.copy2(checkpoint / name, staging / name)
    config = json.loads((staging / "config.json").read_text())
    config["auto_map"] = {**config.get("auto_map", {}), **AUTO_MAP}
    (staging / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    for path in remote_code_files():
        shutil.copy2(path, staging / path.name)
    return config


def build_hub_folder(checkpoint, out, repo_id: str, base_model: str | None = None, scores=None) -> Path:
    """Write the Hub folder of `checkpoint` to `out` (replaced if it exists); returns `out`."""
    from asarg.processing.checkpoints import check_checkpoint, write_checksums

    from .model_card import model_card

    checkpoint, out = Path(checkpoint), Path(out)
    check_checkpoint(checkpoint)  # a torn or LFS-pointer weights file fails here, not on the Hub
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    config = _copy_checkpoint(checkpoint, staging)
    if scores is not None:
        shutil.copy2(scores, staging / "scores.json")
    card = model_card(staging, config, repo_id, base_model=base_model)
    card.save(staging / "README.md")
    write_checksums(staging)
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
    return out


def upload(
    folder: Path,
    repo_id: str,
    private: bool = False,
    revision: str | None = None,
    token=None,
    repo_type="model",
    commit_message: str | None = None,
) -> str:
    """`create_repo` + `upload_folder` (token: argument, `HF_TOKEN` or `hf auth login`, as huggingface_hub reads it).
    `repo_type="space"` creates a Gradio Space."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    space = {"space_sdk": "gradio"} if repo_type == "space" else {}
    api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True, **space)
    if revision is not None:
        api.create_branch(repo_id, branch=revision, repo_type=repo_type, exist_ok=True)
    commit = api.upload_folder(
        repo_id=repo_id,
        repo_type=repo_type,
        folder_path=str(folder),
        revision=revision,
        commit_message=commit_message or f"Upload ASaRG {repo_type} (asarg push)",
    )
    return str(getattr(commit, "commit_url", commit))


def listing(folder: Path) -> list[str]:
    """`size  path` lines of every file under `folder`, sorted."""
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    return [f"{p.stat().st_size:>12,d}  {p.relative_to(folder)}" for p in files]


def _resolve_checkpoint(name: str) -> Path:
    from .models import default_model_path

    return Path(default_model_path() if name == "default" else name)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="asarg push", description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", help="a checkpoint folder (e.g. a training run's output_dir), or `default`")
    p.add_argument("repo_id", help="the Hub model repository, e.g. org/asarg")
    p.add_argument("--dry-run", action="store_true", help="write the folder and list it; upload nothing")
    p.add_argument("--out", help="where the Hub folder is written (default: a temporary folder)")
    p.add_argument("--private", action="store_true")
    p.add_argument("--revision", help="a branch to upload to (created if missing)")
    p.add_argument("--base-model", help="the Hub id this model was grown from (model card metadata)")
    p.add_argument("--scores", help="scores.json for the model card (default: the checkpoint's own, if any)")
    p.add_argument("--token", help="Hub token (default: HF_TOKEN or the stored login)")
    args = p.parse_args(argv)
    try:
        checkpoint = _resolve_checkpoint(args.checkpoint)
        if not (checkpoint / "config.json").is_file():
            raise FileNotFoundError(f"{checkpoint} is not a checkpoint folder (no config.json)")
        out = Path(args.out) if args.out else Path(_tempdir()) / args.repo_id.replace("/", "--")
        folder = build_hub_folder(checkpoint, out, args.repo_id, args.base_model, args.scores)
    except (OSError, ValueError) as error:
        print(f"asarg push: {error}", file=sys.stderr)
        return 2
    print(f"Hub folder for {args.repo_id}: {folder}")
    print("\n".join(listing(folder)))
    if args.dry_run:
        print("dry run: nothing uploaded")
        return 0
    print(upload(folder, args.repo_id, args.private, args.revision, args.token))
    return 0


def _tempdir() -> str:
    import tempfile

    return tempfile.mkdtemp(prefix="asarg-push-")


__all__ = ["build_hub_folder", "listing", "upload"]
