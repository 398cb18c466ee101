"""`asarg push`: a checkpoint folder -> the exact Hub folder (weights, remote code, processor, model card) -> the Hub.

    asarg push runs/my-model org/asarg --dry-run --out hub-folder   # write the folder, list what would go up
    asarg push runs/my-model org/asarg [--private] [--revision BRANCH]
    asarg push default org/asarg                                   # the embedded default model

The folder is what `AutoModel.from_pretrained(repo, trust_remote_code=True)` needs: `model.safetensors`, `config.json`
(with `auto_map`), `generation_config.json`, the processor and tokenizer files, the remote-code files of the
installed `modeling_asarg`, `checksums.sha256` and `README.md`, a model card whose YAML metadata (`model-index`)
carries the CE-F1 of `scores.json` (written by `asarg reproduce --default-model`, or given with `--scores`).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

from asarg.processing.checkpoints import MANIFEST
from asarg.processing.outputs import MARKER, check_output_dir

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
    "generations.jsonl",  # the default model's hold-out generations (experiments/default_model.write_generations)
)
CXAS_ARCHITECTURE = "cxas_unet_resnet50"


def _copy_checkpoint(checkpoint: Path, staging: Path) -> dict:
    """Copy the shipped files; `config.json` gets the current `auto_map` (the owner's line gives the generating model)."""
    from asarg.processing.models import remote_code_files
    from modeling_asarg.modeling_asarg import AUTO_MAP

    for name in CHECKPOINT_FILES:
        if (checkpoint / name).is_file():
            shutil.copy2(checkpoint / name, staging / name)
    config = json.loads((staging / "config.json").read_text())
    config["auto_map"] = {**config.get("auto_map", {}), **AUTO_MAP}
    (staging / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    for path in remote_code_files():
        shutil.copy2(path, staging / path.name)
    return config


def build_hub_folder(
    checkpoint, out, repo_id: str, base_model: str | None = None, scores=None, require_checksums: bool = True
) -> Path:
    """Write the Hub folder of `checkpoint` to `out` through a staging folder (an existing `out` is replaced only once
    the new folder is complete; callers check `out` first with `check_output_dir`); returns `out`.

    The checkpoint's weights are verified against its `checksums.sha256` first and refused when they fail, so a
    damaged file never gets a fresh manifest; `require_checksums=False` also accepts a folder without one (then only headers are checked)."""
    from asarg.processing.checkpoints import check_checkpoint, write_checksums
    from asarg.processing.outputs import staged_dir
    from asarg.training.model_card import model_card

    checkpoint, out = Path(checkpoint), Path(out)
    check_checkpoint(
        checkpoint, verify=True if require_checksums else None
    )  # damaged, torn or LFS-pointer weights stop here
    with staged_dir(out, "push", checkpoint=str(checkpoint.resolve()), repo_id=repo_id) as staging:
        config = _copy_checkpoint(checkpoint, staging)
        if scores is not None:
            shutil.copy2(scores, staging / "scores.json")
        card = model_card(staging, config, repo_id, base_model=base_model)
        card.save(staging / "README.md")
        write_checksums(staging)
    return out


def validate_repo_id(repo_id: str) -> str:
    """`repo_id` when huggingface_hub accepts it as a repository id (`name` or `owner/name`), else ValueError."""
    from huggingface_hub.utils import validate_repo_id as hub_validate

    hub_validate(repo_id)  # HFValidationError is a ValueError
    return repo_id


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
        ignore_patterns=[MARKER],  # the folder's "written by asarg" marker stays local
        commit_message=commit_message or f"Upload ASaRG {repo_type} (asarg push)",
    )
    return str(getattr(commit, "commit_url", commit))


def listing(folder: Path) -> list[str]:
    """`size  path` lines of every file under `folder` that goes up, sorted (the local marker does not)."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MARKER)
    return [f"{p.stat().st_size:>12,d}  {p.relative_to(folder)}" for p in files]


def _resolve_checkpoint(name: str) -> Path:
    from asarg.processing.models import default_model_path

    return Path(default_model_path() if name == "default" else name)


def publish_options(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options `asarg push`, `push-space` and `push-metric` share, defined once."""
    p.add_argument("--dry-run", action="store_true", help="write the folder and list it; upload nothing")
    p.add_argument("--out", help="where the folder is written (default: a new temporary folder)")
    p.add_argument("--overwrite", action="store_true", help="replace --out even if this command did not write it")
    p.add_argument("--private", action="store_true", help="create the repository private")
    p.add_argument("--token", help="Hub token (default: HF_TOKEN or the stored login)")
    return p


def run_publish(
    command: str,
    repo_id: str,
    args: argparse.Namespace,
    build,
    *,
    inputs=(),
    owned=(),
    folder_name: str = "hub",
    repo_type: str = "model",
    revision: str | None = None,
    commit_message: str | None = None,
    check=None,
    after=None,
) -> int:
    """The one build -> list -> dry run or upload sequence of the publishing commands. `build(out)` writes the folder
    (through a staging folder) and returns it; `check()` validates the inputs first; `after(folder)` runs after a
    successful upload. Exit status: 0, 2 for
    a bad argument or a folder that cannot be built, 1 for a failed upload."""
    try:
        validate_repo_id(repo_id)
        if check is not None:
            check()
        if args.out:
            out = check_output_dir(args.out, inputs, command=command, overwrite=args.overwrite, owned=owned)
        else:
            out = Path(tempfile.mkdtemp(prefix=f"asarg-{command}-")) / folder_name
        folder = build(out)
    except (OSError, ValueError, SystemExit) as error:  # build_space reports a wheel mismatch as SystemExit
        print(f"asarg {command}: {error}", file=sys.stderr)
        return 2
    print(f"{repo_type} folder for {repo_id}: {folder}")
    print("\n".join(listing(folder)))
    if args.dry_run:
        print("dry run: nothing uploaded")
        return 0
    where = f"the Space {repo_id}" if repo_type == "space" else repo_id
    try:
        print(upload(folder, repo_id, args.private, revision, args.token, repo_type, commit_message))
        if after is not None:
            after(folder)
    except OSError as error:  # huggingface_hub's HTTP and missing-token errors are OSErrors
        print(f"asarg {command}: uploading to {where} failed: {error}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="asarg push", description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", help="a checkpoint folder (e.g. a training run's output_dir), or `default`")
    p.add_argument("repo_id", help="the Hub model repository, e.g. org/asarg")
    publish_options(p)
    p.add_argument(
        "--allow-unverified",
        action="store_true",
        help="push a checkpoint that has no checksums.sha256 (its weights cannot be verified)",
    )
    p.add_argument("--revision", help="a branch to upload to (created if missing)")
    p.add_argument("--base-model", help="the Hub id this model was grown from (model card metadata)")
    p.add_argument("--scores", help="scores.json for the model card (default: the checkpoint's own, if any)")
    args = p.parse_args(argv)
    checkpoint = _resolve_checkpoint(args.checkpoint)

    def check() -> None:
        if not (checkpoint / "config.json").is_file():
            raise FileNotFoundError(f"{checkpoint} is not a checkpoint folder (no config.json)")
        if not any((checkpoint / name).is_file() for name in ("model.safetensors", "model.safetensors.index.json")):
            raise FileNotFoundError(f"{checkpoint} holds no weights (model.safetensors): nothing to publish")
        if not (checkpoint / MANIFEST).is_file() and not args.allow_unverified:
            raise ValueError(
                f"{checkpoint} has no {MANIFEST}, so its weights cannot be verified before they are published. "
                "Checkpoints written by asarg have one; if you know these weights are good, pass --allow-unverified."
            )

    def build(out: Path) -> Path:
        verified = not args.allow_unverified
        return build_hub_folder(checkpoint, out, args.repo_id, args.base_model, args.scores, verified)

    inputs = [checkpoint, args.scores]
    return run_publish("push", args.repo_id, args, build, inputs=inputs, revision=args.revision, check=check)


__all__ = ["build_hub_folder", "listing", "publish_options", "run_publish", "upload", "validate_repo_id"]
