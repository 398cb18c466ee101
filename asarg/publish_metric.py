"""`asarg push-metric`: the CheXpert CE metric folder, as `evaluate` loads it, -> a Gradio Space on the Hub.

    asarg push-metric org/chexpert_ce --dry-run --out metric-folder   # write the folder, list what would go up
    asarg push-metric org/chexpert_ce [--private]

The folder is `metrics/chexpert_ce/` as checked in (installed, it ships with asarg as the data package
`asarg.metrics.chexpert_ce`): the script, the package's CE and labeler modules it imports (`SIBLINGS`: links to
`asarg.evaluation`'s files in the repository, plain copies in a wheel), the template's `tests.py`, the card, the Space
app and the labeler's licence. It is copied, with the script named after the Space (evaluate loads `<namespace>/<name>`
from `<name>.py`), and uploaded.
"""

from __future__ import annotations

import argparse
import importlib.resources
import re
import sys
from pathlib import Path

from asarg.processing.outputs import check_output_dir, staged_dir

from .publish import publish_options, run_publish

PACKAGE = "asarg.metrics.chexpert_ce"  # metrics/chexpert_ce/ of the checkout
SCRIPT = "chexpert_ce"
ROOT = "clinical_efficacy"  # the sibling module the script imports; only this command's folders hold it
# The package's modules beside the script, by their module name there: asarg.evaluation.clinical_efficacy, the
# package asarg.evaluation.report_labeler's __init__ as report_labeler.py, and the labeler's modules.
LABELER = ("api", "chexbert", "constants", "engine", "phrase_lists", "phrases", "rules", "scanner", "text")
SIBLINGS = (ROOT, "report_labeler", *LABELER)
FILES = (
    f"{SCRIPT}.py",
    *(f"{module}.py" for module in SIBLINGS),
    "tests.py",
    "README.md",
    "app.py",
    "requirements.txt",
    "LICENSE.chexpert-labeler",
)
IN_REPO_LOAD = '"metrics/chexpert_ce"'  # how the script and card load the metric in the repository
REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*/([A-Za-z0-9_-]+)")


def metric_source() -> Path:
    """The metric folder shipped with asarg (the checkout's `metrics/chexpert_ce/` in an editable install)."""
    return Path(str(importlib.resources.files(PACKAGE)))


def script_name(repo_id: str | None) -> str:
    """The metric script's name: evaluate loads `<namespace>/<name>` from `<name>.py` in that Space."""
    if repo_id is None:
        return SCRIPT
    match = REPO_ID.fullmatch(repo_id)
    if match is None:
        raise ValueError(
            f"{repo_id!r} is not a Space id like org/chexpert_ce: evaluate.load needs exactly one '/', and the name "
            "(letters, digits, '-', '_'; no '.') becomes the script's module name."
        )
    if match.group(1) in (*SIBLINGS, "tests", "app"):
        raise ValueError(f"The Space may not be named {match.group(1)!r}: that is a file beside the script.")
    return match.group(1)


def metric_files(name: str = SCRIPT, repo_id: str | None = None) -> dict[str, bytes]:
    """{file name: content} of the published folder: the shipped files, the script named `<name>.py`, and the
    in-repository load path replaced by `repo_id` in the script's example and the card."""
    source = metric_source()
    missing = [file for file in FILES if not (source / file).is_file()]
    if missing:
        raise FileNotFoundError(f"The metric folder {source} lacks {', '.join(missing)}: reinstall asarg.")
    texts = {file: (source / file).read_text(encoding="utf-8") for file in FILES}
    app_target = f'"{SCRIPT}.py"'
    if texts["app.py"].count(app_target) != 1:
        raise ValueError(f"{source / 'app.py'} must name the script as {app_target} exactly once.")
    texts["app.py"] = texts["app.py"].replace(app_target, f'"{name}.py"')
    if repo_id is not None:
        for file in (f"{SCRIPT}.py", "README.md"):
            texts[file] = texts[file].replace(IN_REPO_LOAD, f'"{repo_id}"')
    texts[f"{name}.py"] = texts.pop(f"{SCRIPT}.py")
    return {file: text.encode("utf-8") for file, text in texts.items()}


def build_metric_folder(out: Path, repo_id: str | None = None, overwrite: bool = False) -> Path:
    """Write the metric folder to `out` (replaced if it exists and this command wrote it) and return it: the script
    (named after `repo_id`'s name, default chexpert_ce.py) and the files beside it. `evaluate.load(str(out /
    "<name>.py"))` loads it with only evaluate installed; so does `evaluate.load(str(out))` when `out` is named like
    the script."""
    name = script_name(repo_id)
    out = check_output_dir(out, [metric_source()], command="push-metric", owned=[f"{ROOT}.py"], overwrite=overwrite)
    files = metric_files(name, repo_id)
    with staged_dir(out, "push-metric", marker=False) as staging:  # its clinical_efficacy.py marks it
        for file, data in files.items():
            (staging / file).write_bytes(data)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="asarg push-metric", description=__doc__.split("\n\n")[0])
    p.add_argument("repo_id", help="the Space to publish to, e.g. org/chexpert_ce (its name names the script)")
    args = publish_options(p).parse_args(argv)

    def build(out: Path) -> Path:
        return build_metric_folder(out, args.repo_id, args.overwrite)

    try:
        name = script_name(args.repo_id)  # the folder is named like the script, so evaluate.load(folder) works
    except ValueError as error:
        print(f"asarg push-metric: {error}", file=sys.stderr)
        return 2
    return run_publish(
        "push-metric",
        args.repo_id,
        args,
        build,
        inputs=[metric_source()],
        owned=[f"{ROOT}.py"],
        folder_name=name,
        repo_type="space",
        commit_message="Upload the CheXpert CE metric (asarg push-metric)",
        after=lambda folder: print(f'load it with: evaluate.load("{args.repo_id}")'),
    )


__all__ = ["SIBLINGS", "build_metric_folder", "main", "metric_files", "metric_source", "script_name"]
