"""`asarg` command line.

Each sub-command lives in the module that owns its work and is imported only when it runs, so
`asarg --help` stays fast and a missing optional extra only breaks the command that needs it.
A sub-command is a function `main(argv: list[str]) -> int | None` that parses its own arguments.
"""

from __future__ import annotations

import importlib
import sys

# name -> ("module:function", one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "label": ("processing.report_labeler.cli:label_main", "label reports with the 14 CheXpert observations"),
    "evaluate": ("processing.evaluation_cli:evaluate_main", "CE (and NLG) scores of generated reports, per-label chart"),
    "convert-cxas": ("processing.cxas_convert:main", "CXAS / torchxrayvision weights -> ASaRG segmenter"),
    "synth": ("processing.synthcxr.cli:synth_main", "generate the SynthCXR benchmark"),
    "contact-sheet": ("processing.synthcxr.cli:contact_sheet_main", "PNG of SynthCXR examples with mask overlays"),
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
    target, _ = COMMANDS[name]
    module_name, func_name = target.split(":")
    func = getattr(importlib.import_module(module_name), func_name)
    return int(func(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
