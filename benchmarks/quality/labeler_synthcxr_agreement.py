"""Cross-check of two independent components: does the report labeler read SynthCXR's generated text the way the
generator labelled it? (The generator writes text *from* its labels and never parses it.)

    .venv/bin/python benchmarks/quality/labeler_synthcxr_agreement.py --n 1000 --seed 0

Prints, per observation, the 4-way agreement (1 / 0 / -1 / blank) and the micro-F1 over positives, plus the most
common disagreements with an example, so a reader can tell a labeler rule gap from a generator wording choice.
"""

from __future__ import annotations

import argparse
import math
from collections import Counter


def _value(v):
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else int(v)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=64, help="image size (labels and text do not depend much on it)")
    args = parser.parse_args()

    from asarg.evaluation.report_labeler import CHEXPERT_LABELS, RuleLabeler
    from asarg.processing.synthcxr.generator import generate_study

    labeler = RuleLabeler()
    agree, confusions, examples = Counter(), Counter(), {}
    tp = fp = fn = 0
    for index in range(args.n):
        study = generate_study(args.seed, index, args.size)
        predicted = labeler.label(study.report)
        for label in CHEXPERT_LABELS:
            gold, got = study.labels[label], _value(predicted[label])
            agree[label] += gold == got
            tp += gold == 1 and got == 1
            fp += got == 1 and gold != 1
            fn += gold == 1 and got != 1
            if gold != got:
                confusions[(label, gold, got)] += 1
                examples.setdefault((label, gold, got), study.report)
    print(f"labeler vs synthcxr generator labels, {args.n} studies, seed {args.seed}")
    for label in CHEXPERT_LABELS:
        print(f"  {label:28s} {agree[label] / args.n:.3f}")
    print(f"micro-F1 over positives: {2 * tp / max(1, 2 * tp + fp + fn):.4f}")
    for (label, gold, got), count in confusions.most_common(5):
        print(f"\n{label}: generator {gold}, labeler {got} ({count}x), e.g.\n  {examples[(label, gold, got)][:240]}")


if __name__ == "__main__":
    main()
