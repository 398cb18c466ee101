"""ASaRG Space: a chest X-ray in, a report out, each sentence traced to the anatomy it rests on.

    python spaces_demo/app.py [--model DIR_OR_HUB_ID] [--host 127.0.0.1] [--port 7860]     (or `make demo`)

The model: `--model`, else $ASARG_MODEL, else the model embedded in the asarg package; a folder or a Hub id. Its own
model code runs only with `--trust-remote-code` (or ASARG_TRUST_REMOTE_CODE=1). Every film is checked first
(`asarg.processing.input_check`): one that is not a frontal chest radiograph is refused with the reason, and a
caution is shown above the report for a film unlike the model's training films. It must read segmentation maps and have its built-in segmenter (ASaRG's default model does).

The page: upload a PNG / JPEG / DICOM film or pick an example; "Generate report" writes the report with every sentence
marked by its CheXpert label and draws the segmenter's anatomy on the film; clicking a sentence draws the structures
that support it, with their scores; "Regenerate without it" removes one structure's maps and shows what changed.
`/generate` (gradio_client) takes an image file and returns the report and the grounded JSON.

This file is the layout only; logic.py holds the computations and engine.py the model calls.
"""

from __future__ import annotations

import argparse
import atexit
import functools
import os
import shutil
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no telemetry calls from a medical demo (or offline CI)

import gradio as gr  # noqa: E402

# On a Space app.py runs as a script, so its folder is on sys.path; tests and `make demo` import it from elsewhere.
HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import logic  # noqa: E402
from engine import Analysis, Engine  # noqa: E402

from asarg.processing.image_io import dicom_header  # noqa: E402
from asarg.processing.input_check import summary  # noqa: E402

INTRO = """# ASaRG: anatomy-grounded chest X-ray reports
**Research demo, not for clinical use.** A LLaVA model whose projector also reads the per-structure maps of a chest
X-ray segmenter writes the findings. Upload a film (PNG, JPEG or DICOM) or pick an example, then **Generate report**.
Click a sentence to see the anatomy it rests on; remove a structure to see what the report says without it."""
FOOTER = """A sentence's scores say where the model looked for the finding it writes: each structure's share of the
attention of the classifier whose verdict the model reads (a model without finding tokens: the drop in the sentence's
log-likelihood, in nats, when the structure's maps are removed). They show what this model relies on, not a
diagnosis. Apache-2.0 licence;
SynthCXR examples are synthetic, RG1_UNCR.dcm is a DICOM sample film from the pydicom-data package."""


def _readable_errors(fn):
    """Show input and model-input problems as a gr.Error message on the page (the server keeps serving)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ValueError as error:  # InputError, and the grounding functions' ValueErrors (readable by design)
            raise gr.Error(str(error), title="Cannot use this input") from error

    return wrapper


class Callbacks:
    """The page's event handlers for one engine; each turns logic/engine results into component values."""

    def __init__(self, engine: Engine):
        self.engine = engine

    @staticmethod
    @_readable_errors
    def preview(path):
        return None if path is None else logic.overlay(logic.check_upload(path), {})

    @staticmethod
    def clear():
        """Values of the stale outputs (see `_wire`) when the film changes."""
        return None, None, logic.sentence_details(None), None, "", "", None

    @_readable_errors
    def generate(self, path):
        """The named API: (report, grounded JSON); the third value, the page's state, is not part of the API."""
        analysis = self.engine.analyse(logic.check_upload(path), dicom_header(path))
        return analysis.grounded["report"], analysis.grounded, analysis

    @staticmethod
    def film(analysis: Analysis | None):
        if analysis is None:
            return gr.skip()
        colors = logic.color_map(list(analysis.masks))
        return gr.AnnotatedImage(logic.overlay(analysis.image, analysis.masks), color_map=colors)

    def show(self, analysis: Analysis):
        caution = summary(analysis.grounded.get("input_check") or {"refuse": False, "warnings": []})
        details = (f"**{caution}**\n\n" if caution else "") + logic.sentence_details(None)
        return self.film(analysis), logic.highlight_report(analysis.grounded), details, None, ""

    @staticmethod
    def select(analysis: Analysis | None, evt: gr.SelectData):
        if analysis is None:
            return gr.skip(), gr.skip()
        sentence = logic.sentence_at(analysis.grounded, evt.index)
        if sentence is None:
            return gr.skip(), logic.sentence_details(None)
        grounded, image = analysis.grounded, analysis.image
        notes = logic.sentence_annotations(sentence, analysis.masks, grounded["image_size"], image.size)
        # The same colour for a structure as in the full overlay; labels carry the score after two spaces.
        palette = logic.color_map(list(analysis.masks))
        colors = {label: palette.get(label.rsplit("  ", 1)[0], "#e4572e") for _, label in notes}
        return gr.AnnotatedImage((image, notes), color_map=colors), logic.sentence_details(sentence)

    @_readable_errors
    def counterfactual(self, analysis: Analysis | None, structure):
        if analysis is None:
            raise logic.InputError("Generate a report first, then remove a structure.")
        structure = logic.check_choice(structure, self.engine.structures())
        before, after = analysis.grounded["report"], self.engine.without(analysis.image, structure)
        return logic.word_diff(before, after), logic.diff_summary(before, after, structure)


def _film_row(engine: Engine, examples) -> dict:
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=300):
            upload = gr.File(label="Chest X-ray: PNG, JPEG or DICOM", type="filepath", height=120, elem_id="upload")
            run = gr.Button("Generate report", variant="primary")
            if examples:
                gr.Examples(
                    [[path] for path, _ in examples],
                    inputs=[upload],
                    example_labels=[label for _, label in examples],
                    label="Examples",
                )
            gr.Markdown(f"Model: {engine.describe()}; {len(engine.channel_names)} anatomy maps.")
        with gr.Column(scale=3, min_width=360):
            film = gr.AnnotatedImage(label="Film and anatomy (hover the legend)", height=560, format="png")
            whole = gr.Button("Show all anatomy", size="sm")
    return {"upload": upload, "run": run, "film": film, "whole": whole}


def _report_row(engine: Engine) -> dict:
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            report = gr.HighlightedText(
                label="Report (click a sentence)",
                color_map=logic.LABEL_COLORS,
                show_legend=True,
                combine_adjacent=False,  # one segment per sentence: a click selects exactly one
                interactive=False,
                elem_id="report",
            )
            details = gr.Markdown(logic.sentence_details(None), elem_id="sentence-details")
        with gr.Column(scale=2):
            gr.Markdown("### Counterfactual: remove a structure")
            choices = logic.counterfactual_choices(engine.structures(), engine.groups)
            drop = gr.Dropdown(choices, value=None, label="Structure to remove", elem_id="drop")
            regenerate = gr.Button("Regenerate without it")
            diff_note = gr.Markdown("")
            diff = gr.HighlightedText(
                label="What changed", color_map=logic.DIFF_COLORS, show_legend=True, combine_adjacent=True
            )
    return {
        "report": report,
        "details": details,
        "drop": drop,
        "regenerate": regenerate,
        "diff": diff,
        "diff_note": diff_note,
    }


def _wire(c: dict, calls: Callbacks) -> None:
    """Connect the events; only `generate` is public API, the rest serve the page."""
    private = {"api_visibility": "private"}
    model = {"concurrency_id": "model", "concurrency_limit": 1}  # one model: visitors queue for it
    # A new film (or none) first clears the last one's report, so the page never shows a report of another film.
    stale = [c["analysis"], c["report"], c["details"], c["diff"], c["diff_note"], c["report_text"], c["grounded"]]
    c["upload"].change(calls.clear, None, stale, **private).then(calls.preview, [c["upload"]], [c["film"]], **private)
    generated = c["run"].click(
        calls.generate, [c["upload"]], [c["report_text"], c["grounded"], c["analysis"]], api_name="generate", **model
    )
    shown = [c["film"], c["report"], c["details"], c["diff"], c["diff_note"]]
    generated.success(calls.show, [c["analysis"]], shown, **private)
    c["report"].select(calls.select, [c["analysis"]], [c["film"], c["details"]], **private)
    c["whole"].click(calls.film, [c["analysis"]], [c["film"]], **private)
    c["regenerate"].click(
        calls.counterfactual, [c["analysis"], c["drop"]], [c["diff"], c["diff_note"]], **private, **model
    )


def build_demo(engine: Engine, examples: list[tuple[str, str]] = ()) -> gr.Blocks:
    """The page for `engine`'s model; `examples` are (file, label) pairs. Loads nothing: the caller owns the model."""
    with gr.Blocks(title="ASaRG: anatomy-grounded chest X-ray reports") as demo:
        gr.Markdown(INTRO)
        components = {"analysis": gr.State(None, time_to_live=3600)}  # per visitor: film, grounded report, masks
        components |= _film_row(engine, examples)
        components |= _report_row(engine)
        with gr.Accordion("Report text and grounded JSON (what the /generate API returns)", open=False):
            components["report_text"] = gr.Textbox(label="Report", lines=3, interactive=False)
            components["grounded"] = gr.JSON(label="Grounded report")
        gr.Markdown(FOOTER)
        _wire(components, Callbacks(engine))
    return demo


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="ASaRG checkpoint folder or Hub id (default: $ASARG_MODEL, else the embedded one)")
    # A Space sets GRADIO_SERVER_NAME=0.0.0.0; locally the app listens on the loopback interface only.
    p.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
    p.add_argument("--examples", type=int, default=3, help="SynthCXR studies to generate as examples")
    p.add_argument("--max-new-tokens", type=int, default=160)
    p.add_argument(
        "--trust-remote-code",
        action="store_true",
        default=None,
        help="let --model run its own model code (default: $ASARG_TRUST_REMOTE_CODE=1, else off)",
    )
    return p.parse_args(argv)


def make_examples(n: int) -> list[tuple[str, str]]:
    """Examples in a fresh temp folder (removed at exit): gradio serves example files from the temp folder."""
    folder = tempfile.mkdtemp(prefix="asarg-space-examples-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return logic.write_examples(folder, n) if n > 0 else []


def launch(demo: gr.Blocks, host: str = "127.0.0.1", port: int | None = None, **kwargs):
    """Queue on, uploads capped, nothing outside gradio's own upload/cache folders served (no allowed_paths)."""
    demo.queue(max_size=64)
    return demo.launch(server_name=host, server_port=port, max_file_size=f"{logic.MAX_UPLOAD_MB}mb", **kwargs)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        engine = Engine.load(args.model, args.trust_remote_code, max_new_tokens=args.max_new_tokens)
    except (FileNotFoundError, ValueError) as error:  # no embedded model yet, a model the page cannot serve, ...
        raise SystemExit(f"asarg Space: cannot serve this model: {error}") from error
    launch(build_demo(engine, make_examples(args.examples)), args.host, args.port)


if __name__ == "__main__":
    main()
