"""`asarg push-metric`: the CheXpert CE metric as a self-contained `evaluate` Space (`build_metric_folder` in
`asarg.evaluation.metric_bundle` writes the folder) -> the Hub.

    asarg push-metric org/chexpert_ce --dry-run --out metric-folder   # write the folder, list what would go up
    asarg push-metric org/chexpert_ce [--private]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from asarg.evaluation.metric_bundle import ROOT, build_metric_folder, script_name

from .publish import publish_options, run_publish


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
        owned=[f"{ROOT}.py"],
        folder_name=name,
        repo_type="space",
        commit_message="Upload the CheXpert CE metric (asarg push-metric)",
        after=lambda folder: print(f'load it with: evaluate.load("{args.repo_id}")'),
    )


__all__ = ["main"]
