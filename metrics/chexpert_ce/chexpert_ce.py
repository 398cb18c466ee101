"""CheXpert clinical-efficacy (CE) metric: precision / recall / F1 of the 14 CheXpert observations that a labeler
finds in generated vs reference chest X-ray reports."""

import datasets
import evaluate

# The CE maths and the labeler: the `asarg` package's own modules (asarg.evaluation.clinical_efficacy and the
# modules of asarg.evaluation.report_labeler, its __init__ as report_labeler.py), side by side in this folder (links
# in the repository). evaluate's loader copies the single-file modules a script imports relatively and nothing
# further, not even their imports, so each one is imported here.
from .api import LABELERS
from .chexbert import CheXbertLabeler
from .clinical_efficacy import check_pair, compute_ce, validate_batch
from .constants import CHEXPERT_LABELS
from .engine import RuleLabeler
from .phrase_lists import PHRASE_FILES
from .phrases import load_phrase_patterns
from .report_labeler import label_reports
from .rules import NEGATION_FWD
from .scanner import MultiScanner
from .text import normalize

_CITATION = """\
@article{irvin2019chexpert,
  title={CheXpert: A Large Chest Radiograph Dataset with Uncertainty Labels and Expert Comparison},
  author={Irvin, Jeremy and Rajpurkar, Pranav and Ko, Michael and others},
  journal={Proceedings of the AAAI Conference on Artificial Intelligence},
  year={2019}
}
@inproceedings{chen2020r2gen,
  title={Generating Radiology Reports via Memory-driven Transformer},
  author={Chen, Zhihong and Song, Yan and Chang, Tsung-Hui and Wan, Xiang},
  booktitle={EMNLP},
  year={2020}
}
"""

_DESCRIPTION = """\
Clinical efficacy (CE) of generated radiology reports. Both the predictions and the references are labelled with the
14 CheXpert observations (1 positive, 0 negative, -1 uncertain, blank), binarised under an explicit convention, and
compared: precision, recall and F1 (micro, macro and example-based) plus per-label scores. The definition is part
of the arguments and echoed in the result. Default: the R2Gen convention (built-in rule-based CheXpert labeler,
only 1 is positive, 14 labels), which COMG / ORID / R2GenCMN report.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `str`): generated reports.
    references (`list` of `str`): reference reports of the same studies, in the same order.
    labeler (`str`, default "chexpert-rules"): "chexpert-rules" (built-in, offline) or "chexbert" (needs
        `chexbert_path`).
    uncertain (`str`, default "negative"): how uncertain (-1) counts: "negative" (R2Gen) or "positive".
    labels (`int`, default 14): 14 observations or the 5 competition ones.
    chexbert_path (`str`, optional): local CheXbert checkpoint (chexbert.pth); its folder or `tokenizer_path` must
        hold a bert-base-uncased tokenizer.
    variants (`bool`, default False): also return `variants`, the eight CE F1 variants the literature reports, from
        the same labeling: Micro-F1-14, Macro-F1-14, Micro-F1-5, Macro-F1-5 (uncertain negative: R2Gen, LLaVA-Rad)
        and the same with "+" (uncertain positive: LLaVA-Rad's "+", CheXagent / f1chexbert).
Returns:
    f1_micro, precision_micro, recall_micro, f1_macro, precision_macro, recall_macro, f1_example, precision_example,
    recall_example (`float`), per_label (`dict`: label -> precision, recall, f1, support, predicted),
    definition (`str`), definition_args (`dict`), num_reports (`int`), unreadable (`dict`: how many predictions and
    references have no English text the labeler can read, e.g. Chinese; they count as reports without findings);
    with `variants=True`, variants (`list` of `dict`: name, labels, uncertain, average, precision, recall, f1,
    reported_by).
Examples:
    >>> ce = evaluate.load("metrics/chexpert_ce")
    >>> result = ce.compute(predictions=["Mild cardiomegaly. No effusion."],
    ...                     references=["Cardiomegaly with small left pleural effusion."])
    >>> round(result["f1_micro"], 4)
    0.6667
    >>> result["definition_args"]["uncertain"], result["definition_args"]["labels"]
    ('negative', 14)
    >>> [v["name"] for v in ce.compute(predictions=["Mild cardiomegaly."], references=["Cardiomegaly."],
    ...                                variants=True)["variants"]][:2]
    ['Micro-F1-14', 'Macro-F1-14']
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class ChexpertCE(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
            reference_urls=[
                "https://github.com/stanfordmlgroup/chexpert-labeler",
                "https://github.com/zhjohnchan/R2Gen",
            ],
        )

    def compute(self, *, predictions=None, references=None, **kwargs):
        """Compute the CE scores (arguments below)."""
        # Check before evaluate's Arrow conversion, which would turn None into null or fail with a generic message.
        if predictions is not None or references is not None:
            check_pair(predictions, references)
        return super().compute(predictions=predictions, references=references, **kwargs)

    def add_batch(self, *, predictions=None, references=None, **kwargs):
        """Add a batch of report pairs; a bad entry raises a ValueError that names it, as in `compute`."""
        if predictions is not None or references is not None:
            validate_batch(predictions, references)
        return super().add_batch(predictions=predictions, references=references, **kwargs)

    def add(self, *, prediction=None, reference=None, **kwargs):
        """Add one report pair; a non-string raises a ValueError that says which, as in `compute`."""
        if prediction is not None or reference is not None:
            validate_batch([prediction], [reference])
        return super().add(prediction=prediction, reference=reference, **kwargs)

    def _compute(
        self,
        predictions,
        references,
        labeler="chexpert-rules",
        uncertain="negative",
        labels=14,
        chexbert_path=None,
        variants=False,
    ):
        return compute_ce(
            list(predictions),
            list(references),
            labeler=labeler,
            uncertain=uncertain,
            labels=labels,
            chexbert_path=chexbert_path,
            variants=variants,
        )
