"""Agreement with real gold labels (Open-i / IU X-ray, NegBio gold): the CI gate for the rule-based labeler."""

import re
from pathlib import Path

import pytest
from conftest import load_benchmark

REPO = Path(__file__).resolve().parents[2]
OPENI = REPO.parent / "shared" / "data" / "openi"
FLOOR = 0.90


def _benchmark():
    return load_benchmark("labeler_openi")


@pytest.fixture(scope="module")
def bench():
    if not (OPENI / "indiana_reports.csv").is_file() or not (OPENI / "openi_gold_dev.csv").is_file():
        pytest.fail(f"Open-i benchmark data missing at {OPENI}: the shared folder must sit beside the checkout.")
    return _benchmark()


@pytest.mark.slow
def test_openi_micro_f1_meets_the_floor(bench):
    result = bench.run_openi_benchmark(OPENI, verbose=True)
    assert result["n_reports"] == 3080
    assert result["micro_f1"] >= FLOOR, (
        f"Open-i micro-F1 over the 8 mapped observations fell to {result['micro_f1']:.4f} (< {FLOOR}):\n"
        + bench.format_table(result)
    )


def test_missing_data_is_an_error_not_a_skip(tmp_path):
    with pytest.raises(FileNotFoundError, match="Open-i benchmark data not found"):
        _benchmark().load_openi(tmp_path)


@pytest.mark.slow
def test_one_pass_scanner_equals_separate_searches_on_real_text(bench):
    from asarg.evaluation.report_labeler.phrases import load_phrase_patterns, load_phrase_scanner
    from asarg.evaluation.report_labeler.text import normalize, split_sentences

    _, reports, _ = bench.load_openi(OPENI)
    sentences = sorted({s for r in reports[:800] for s in split_sentences(normalize(r))})
    patterns = {
        f"{k}|{label}": re.compile(rx) for k, table in load_phrase_patterns().items() for label, rx in table.items()
    }
    scanner = load_phrase_scanner()
    for s in sentences:
        expected = {k: [m.span() for m in p.finditer(s)] for k, p in patterns.items()}
        expected = {k: v for k, v in expected.items() if v}
        got = scanner.scan(s)
        # The scanner may also report a second, later-starting match inside a longer one; every separate match
        # must be there.
        for key, spans in expected.items():
            assert set(spans) <= set(got.get(key, [])), (s, key, spans, got.get(key))
        assert set(got) == set(expected), s
