# The evaluate metric template's test cases: each runs `compute(predictions=..., references=..., **kwargs)` and
# compares the listed keys of the result (floats to 4 places). tests/evaluation/test_metric_folder.py runs them.
test_cases = [
    {
        "predictions": ["Mild cardiomegaly. No effusion."],
        "references": ["Cardiomegaly with small left pleural effusion."],
        "result": {"f1_micro": 0.6667, "precision_micro": 1.0, "recall_micro": 0.5, "num_reports": 1},
    },
    {
        "predictions": ["Cardiomegaly.", "No acute cardiopulmonary abnormality."],
        "references": ["The heart is enlarged.", "Lungs are clear. No pleural effusion."],
        "result": {"f1_micro": 1.0, "f1_macro": 0.1429, "num_reports": 2},
    },
    {
        "predictions": ["Pleural effusion."],
        "references": ["Cardiomegaly."],
        "result": {"f1_micro": 0.0, "precision_micro": 0.0, "recall_micro": 0.0},
    },
    {
        # uncertain (-1) counts as negative by default (R2Gen) ...
        "predictions": ["Possible pneumonia."],
        "references": ["Pneumonia."],
        "result": {"f1_micro": 0.0},
    },
    {
        # ... and as positive with uncertain="positive" (f1chexbert, LLaVA-Rad "rrg+")
        "predictions": ["Possible pneumonia."],
        "references": ["Pneumonia."],
        "kwargs": {"uncertain": "positive"},
        "result": {"f1_micro": 1.0, "f1_macro": 0.0714},
    },
    {
        "predictions": ["Possible edema."],
        "references": ["Edema."],
        "kwargs": {"uncertain": "positive", "labels": 5},
        "result": {"f1_micro": 1.0, "f1_macro": 0.2, "num_reports": 1},
    },
]
