"""`asarg generate`: chest X-ray images in, reports out.

    asarg generate cxr.png study.dcm [--model DIR_OR_HUB_ID] [--ground [--top 5]] [--format json] [--output FILE]

`generate_reports` is the batched function behind it (also used by the reproduction pipeline). Without `--model` the
model shipped inside the package is used (`asarg.processing.models.resolve_model`). Images are read with
`asarg.processing.image_io.load_image` (PNG/JPEG 8/16-bit, DICOM) one batch at a time; a file that cannot be read is
reported by name and the others still run (the exit status is 1 then; 2 when there is no model to run). Each film is
checked first (`asarg.processing.input_check`): one that is not a frontal chest radiograph (a photo, CT, a lateral or
non-chest DICOM, a blank film) is refused with the reason, like an unreadable file, unless `--force`; a film unlike
the model's training films gets a caution on stderr. `--format json` writes JSON Lines: `{"image": path, "report": text,
"input_check": verdict}`. `--ground` adds, per sentence, its CheXpert labels and the
anatomy it was traced to, with scores and pixel boxes (`asarg.evaluation.grounding.ground_report`; with `--format json` the
line is that dict plus "image"). `--dicom-out DIR` (implies `--ground`) also writes, per film, a DICOM SEG of the
traced structures and a Comprehensive SR of the sentences with their labels and segment references
(`asarg.evaluation.dicom_report`; a PNG / JPEG film also gets the Secondary Capture they refer to, with synthetic
identifiers); DIR is a new or empty folder, or one an earlier `--dicom-out` wrote, and is replaced only when every film
is done. A progress bar goes to stderr when it is a terminal, or with `--progress`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from contextlib import contextmanager

from asarg.processing.image_io import dicom_header
from asarg.processing.inference import generate_reports, load_for_generation
from asarg.processing.input_check import check_input, summary
from asarg.processing.loaders.common import DEFAULT_PROMPT
from asarg.processing.outputs import add_format_option, add_output_file_option


def _read_image(path: str):
    """(image, None) or (None, error line): a bad file costs only itself."""
    from asarg.processing.image_io import load_image

    try:
        return load_image(path), None
    except (OSError, ValueError) as error:
        return None, f"asarg generate: {path}: {error}"


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="asarg generate", description=__doc__.split("\n\n")[0])
    p.add_argument("images", nargs="+", help="PNG / JPEG / DICOM files")
    p.add_argument("--model", help="an ASaRG checkpoint folder or Hub id (default: the model shipped with asarg)")
    p.add_argument("--prompt", default=DEFAULT_PROMPT)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=160)
    p.add_argument("--ground", action="store_true", help="per sentence: CheXpert labels and traced anatomy with boxes")
    p.add_argument("--top", type=int, default=5, help="structures shown per sentence with --ground")
    p.add_argument(
        "--dicom-out",
        metavar="DIR",
        help="also write a DICOM SEG + Comprehensive SR per film into this folder (implies --ground)",
    )
    add_format_option(p)
    p.add_argument("--json", dest="format", action="store_const", const="json", help=argparse.SUPPRESS)  # older name
    add_output_file_option(p, "write here instead of standard output (a new file; see --overwrite)", ("--out",))
    p.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="allow a --model folder to run its own modelling code when it differs from the installed asarg's",
    )
    p.add_argument("--progress", action="store_true", help="progress bar on stderr even when it is not a terminal")
    p.add_argument(
        "--force", action="store_true", help="write a report even for a film the input check refuses (said on stderr)"
    )
    args = p.parse_args(argv)
    if args.batch_size < 1 or args.top < 1:
        p.error("--batch-size and --top must be at least 1")
    args.ground = args.ground or args.dicom_out is not None
    args.dicom_staging = None
    return args


def _sentence_line(sentence: dict) -> str:
    """One indented line: the sentence, its labels, the finding traced (its verdict), its structures with score (a
    share of the finding classifier's attention, or a drop in nats) and box."""
    labels = ", ".join(f"{o}: {v}" for o, v in sentence["labels"].items()) or "no finding"
    score = "{:.0%}" if sentence.get("method") == "finding" else "{:.3f}"
    structures = "; ".join(
        f"{s['name']} {score.format(s['score'])} {s['box'] if s['box'] is not None else '(no mask)'}"
        for s in sentence["structures"]
    )
    traced = f"  {sentence['finding']} {sentence['confidence']:.0%}:" if sentence.get("finding") else ""
    return f"    {sentence['text']}  [{labels}]{traced}  {structures}"


def _format(path: str, result: dict, as_json: bool) -> str:
    """The output for one image: a JSON line, or `path<TAB>report` plus one indented line per grounded sentence."""
    if as_json:
        return json.dumps({"image": path, **result}) + "\n"
    lines = [f"{path}\t{result['report']}"] + [_sentence_line(s) for s in result.get("sentences", [])]
    return "\n".join(lines) + "\n"


def _run_batch(model, processor, paths: list[str], args) -> tuple[list[str], list[str], list[str]]:
    """(output chunks, error lines, caution lines) of one batch of files: each film checked first
    (`input_check.check_input`: a film that is not a frontal chest radiograph is refused unless --force), then reports
    generated together, or with --ground one by one."""
    good, images, verdicts, errors, cautions = [], [], [], [], []
    for path in paths:
        image, error = _read_image(path)
        if error:
            errors.append(error)
            continue
        verdict = check_input(model, processor, image, dicom_header(path))
        if verdict["refuse"] and not args.force:
            errors.append(f"asarg generate: {path}: {summary(verdict)} (--force writes a report anyway)")
            continue
        cautions += [f"asarg generate: {path}: {summary(verdict)}"] if verdict["warnings"] or verdict["refuse"] else []
        good.append(path)
        images.append(image)
        verdicts.append(verdict)
    if args.ground:
        chunks, errors = _ground_each(model, processor, good, images, args, errors, verdicts)
        return chunks, errors, cautions
    reports = generate_reports(model, processor, images, args.prompt, args.batch_size, args.max_new_tokens)
    results = [{"report": report, "input_check": verdict} for report, verdict in zip(reports, verdicts)]
    return [_format(path, result, args.format == "json") for path, result in zip(good, results)], errors, cautions


def _ground_each(model, processor, paths: list[str], images: list, args, errors: list[str], verdicts: list[dict]):
    """`ground_report` generates each report itself, from the segmentation it also traces and boxes with: the
    segmenter runs once per image (generating the batch first would run it twice)."""
    from asarg.evaluation.grounding import ground_report
    from asarg.processing.dicom_out import DicomOutError

    chunks = []
    for path, image, verdict in zip(paths, images, verdicts):
        result = None
        try:
            try:
                result = None if args.dicom_staging is None else _write_dicom(model, processor, path, image, args)
            except DicomOutError as error:  # the grounded report is still printed, without its DICOM
                errors.append(f"asarg generate: {path}: no DICOM SEG / SR written: {error}")
            if result is None:
                result = ground_report(
                    model, processor, image, top=args.top, prompt=args.prompt, max_new_tokens=args.max_new_tokens
                )
        except ValueError as error:  # the report is still written, ungrounded
            errors.append(f"asarg generate: {path}: cannot ground the report: {error}")
            result = {"report": generate_reports(model, processor, [image], args.prompt, 1, args.max_new_tokens)[0]}
        chunks.append(_format(path, {**result, "input_check": verdict}, args.format == "json"))
    return chunks, errors


def _write_dicom(model, processor, path: str, image, args) -> dict:
    """`ground_report`'s dict for the film, its SEG and SR written into the staging folder of --dicom-out."""
    from asarg.evaluation.dicom_report import write_grounded_dicom

    written = write_grounded_dicom(
        model,
        processor,
        path,
        args.dicom_staging,
        image=image,
        top=args.top,
        prompt=args.prompt,
        max_new_tokens=args.max_new_tokens,
    )
    return written["grounded"] | {
        "dicom": {k: os.path.basename(written[k]) for k in ("seg", "sr", "image") if k in written}
    }


def _load(args):
    """(model, processor), or (None, error line) when the model cannot be found or cannot ground."""
    from asarg.processing.models import resolve_model

    try:
        model, processor = load_for_generation(resolve_model(args.model), args.trust_remote_code)
    # No embedded default model, no such folder or Hub repository, not a checkpoint, a damaged one (CheckpointError
    # is a ValueError): each message says why, and a traceback would add nothing.
    except (OSError, ValueError) as error:
        return None, f"asarg generate: {error}"
    if args.ground:
        from asarg.evaluation.grounding import check_segmentable, check_traceable

        try:
            check_traceable(model)
            check_segmentable(model, processor)
        except ValueError as error:
            return None, f"asarg generate: --ground: {error}"
    return (model, processor), None


def main(argv: list[str] | None = None) -> int:
    from tqdm import tqdm

    args = _parse(argv)
    missing = [path for path in args.images if not os.path.isfile(path)]
    if missing:  # a mistyped path is a user error, named before the model loads (an unreadable file costs only itself)
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        print(f"asarg generate: no such file: {shown}", file=sys.stderr)
        return 2
    if args.output is not None:  # before the model loads: a bad path must cost nothing, and never an input
        from asarg.processing.outputs import OutputError, check_output_file

        try:
            args.output = check_output_file(args.output, args.images, overwrite=args.overwrite, what="--output")
        except OutputError as error:
            print(f"asarg generate: {error}", file=sys.stderr)
            return 2
    if args.dicom_out is not None:
        from asarg.processing.outputs import OutputError, check_output_dir

        try:
            args.dicom_out = check_output_dir(
                args.dicom_out,
                args.images + ([args.output] if args.output else []),
                command=DICOM_COMMAND,
                overwrite=args.overwrite,
                what="--dicom-out",
            )
            _check_dicom_extra()
        except (OutputError, ImportError) as error:
            print(f"asarg generate: {error}", file=sys.stderr)
            return 2
    loaded, problem = _load(args)
    if problem:
        print(problem, file=sys.stderr)
        return 2
    model, processor = loaded
    show = args.progress or sys.stderr.isatty()
    failed = 0
    bar = tqdm(total=len(args.images), unit="image", file=sys.stderr, disable=not show)
    with _output(args.output) as out, _dicom_staging(args), bar:
        for start in range(0, len(args.images), args.batch_size):
            paths = args.images[start : start + args.batch_size]
            chunks, errors, cautions = _run_batch(model, processor, paths, args)
            for line in errors + cautions:
                bar.write(line, file=sys.stderr)  # above the bar, not through it
            out.write("".join(chunks))
            out.flush()
            failed += len(errors)
            bar.update(len(paths))
    return 1 if failed else 0


DICOM_COMMAND = "generate --dicom-out"


def _check_dicom_extra() -> None:
    """ImportError naming the extra when highdicom is missing (before the model loads)."""
    try:
        import highdicom  # noqa: F401
    except ImportError as error:
        raise ImportError("--dicom-out needs highdicom: pip install 'asarg[dicom]'") from error


@contextmanager
def _dicom_staging(args):
    """The --dicom-out folder's staging folder (None without --dicom-out), moved into place when every film is done."""
    if args.dicom_out is None:
        yield None
        return
    from asarg.processing.outputs import staged_dir

    with staged_dir(args.dicom_out, DICOM_COMMAND) as staging:
        args.dicom_staging = staging
        yield staging


@contextmanager
def _output(path: str | None):
    """The output stream: standard output, or a file that replaces `path` once every image is done."""
    if path is None:
        yield sys.stdout
        return
    from asarg.processing.outputs import staged_file

    with staged_file(path) as stream:
        yield stream


__all__ = ["generate_reports", "load_for_generation"]
