"""The Space of the CheXpert CE metric: paste generated and reference reports, one per line, and get the scores.

evaluate's own `launch_gradio_widget` builds its form with `gr.inputs`, which gradio 4 removed, so this is a small
Interface of its own.
"""

from pathlib import Path

import evaluate
import gradio as gr

# The script beside this file (`asarg push-metric` names it after the Space): the Space runs its own revision.
METRIC = evaluate.load(str(Path(__file__).with_name("chexpert_ce.py")))

EXAMPLES = [
    [
        "Mild cardiomegaly. No pleural effusion.\nNo acute cardiopulmonary abnormality.",
        "Cardiomegaly with small left pleural effusion.\nHeart size normal. Lungs are clear.",
        "negative",
        "14",
    ]
]


def score(predictions: str, references: str, uncertain: str = "negative", labels: str = "14") -> dict:
    """CE scores of two blocks of text with one report per line (line i of each side is one study)."""
    try:
        return METRIC.compute(
            predictions=predictions.strip("\n").splitlines(),
            references=references.strip("\n").splitlines(),
            uncertain=uncertain,
            labels=int(labels),
        )
    except ValueError as error:  # mismatched or empty inputs: show the metric's message, not a stack trace
        raise gr.Error(str(error)) from error


demo = gr.Interface(
    fn=score,
    inputs=[
        gr.Textbox(lines=6, label="Generated reports (one per line)"),
        gr.Textbox(lines=6, label="Reference reports (one per line, same order)"),
        gr.Radio(["negative", "positive"], value="negative", label="Uncertain (-1) counts as"),
        gr.Radio(["14", "5"], value="14", label="CheXpert labels"),
    ],
    outputs=gr.JSON(label="CE scores"),
    title="CheXpert CE",
    description=METRIC.info.description,
    examples=EXAMPLES,
)

if __name__ == "__main__":
    demo.launch()
