"""The ASaRG Space (spaces_demo/): its logic functions, the running server through gradio_client, and the page in a
real headless browser.

The server tests build a small trained checkpoint once per session, the way `asarg reproduce --quick
--default-model` builds its model (SynthCXR data, specialist segmenter, vision tower, the features+maps initial
checkpoint, one SFT run of the recipe), but with 100 SFT steps at learning rate 1e-2 instead of 4: the 4-step model
writes only spaces, and the page needs a report with sentences to click. About a minute on two CPU cores. Set
ASARG_TEST_SPACE_MODEL=DIR to reuse a checkpoint built before.

The browser test needs Debian's `chromium` and `chromium-driver` and the `selenium` package; it saves a screenshot
to $ASARG_DEMO_SCREENSHOT (default: the test's tmp folder).
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("gradio", reason="the Space needs the `demo` extra: pip install -e '.[demo]'")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
SPACE = Path(__file__).resolve().parents[2] / "spaces_demo"
if str(SPACE) not in sys.path:
    sys.path.insert(0, str(SPACE))

import logic  # noqa: E402

MAX_NEW_TOKENS = 40  # the toy model repeats itself up to the limit; 40 tokens keep a request near a second
OBSERVATION_VALUES = {"positive", "uncertain", "negative"}


# ---- fixtures --------------------------------------------------------------------------------------------------------


def build_space_model(out: Path) -> Path:
    from asarg.experiments.steps import QUICK, make_data, prepare_models, train_run

    settings = replace(QUICK, arms=("features+maps",))
    folders = make_data(out, settings)
    init = prepare_models(out, folders, settings)["features+maps"]
    run = out / "run"
    train_run(run, init, folders["rg"], 40, 0, replace(settings, steps=100), extra=["--learning_rate", "1e-2"])
    return run


@pytest.fixture(scope="session")
def space_model(tmp_path_factory) -> str:
    return os.environ.get("ASARG_TEST_SPACE_MODEL") or str(build_space_model(tmp_path_factory.mktemp("space-model")))


@pytest.fixture(scope="session")
def engine(space_model):
    from engine import Engine

    return Engine.load(space_model, max_new_tokens=MAX_NEW_TOKENS)


@pytest.fixture(scope="session")
def examples(tmp_path_factory):
    return logic.write_examples(tmp_path_factory.mktemp("space-examples"), n=2, size=256)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def server(engine, examples):
    """The app's URL: `build_demo` + `launch` as `main()` runs them, in this process, on a free local port."""
    import app

    demo = app.build_demo(engine, examples)
    _, url, _ = app.launch(demo, "127.0.0.1", free_port(), prevent_thread_lock=True, quiet=True)
    yield url
    demo.close()


@pytest.fixture
def bad_files(tmp_path):
    """name -> file: not an image (text named .png), empty, and just over the upload limit."""
    text = tmp_path / "notes.png"
    text.write_text("Findings: none. This is a text file, not a radiograph.")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    big = tmp_path / "huge.png"
    with big.open("wb") as f:
        f.truncate(logic.MAX_UPLOAD_MB * 2**20 + 1)  # sparse: no 25 MB written to disk
    return {"not an image": text, "empty": empty, "too large": big}


def grounded_report(report: str, sentences: list[tuple[str, dict, list]]) -> dict:
    """A ground_report-shaped dict for the logic tests: sentences as (text, labels, structures)."""
    out, cursor = [], 0
    for text, labels, structures in sentences:
        start = report.index(text, cursor)
        cursor = start + len(text)
        out.append({"text": text, "span": [start, cursor], "labels": labels, "structures": structures})
    return {"report": report, "image_size": [100, 80], "sentences": out}


# ---- logic: input checks ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "message"),
    [("not an image", "not an image file"), ("empty", r"is empty \(0 bytes\)"), ("too large", "is too large")],
)
def test_check_upload_refuses_bad_files_readably(bad_files, kind, message):
    path = bad_files[kind]
    with pytest.raises(logic.InputError, match=message) as caught:
        logic.check_upload(path)
    assert path.name in str(caught.value)
    assert str(path.parent) not in str(caught.value)  # the server's temp folder is not shown to the visitor


def test_check_upload_without_a_file():
    with pytest.raises(logic.InputError, match="No image given"):
        logic.check_upload(None)


def test_check_upload_scales_deep_and_large_films(tmp_path):
    deep = (np.arange(700 * 600, dtype=np.uint32).reshape(700, 600) * 3 % 65536).astype(np.uint16)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    image = logic.check_upload(tmp_path / "deep.png")
    assert image.mode == "L" and max(image.size) == logic.WORK_SIDE
    assert image.size == (439, 512)  # aspect ratio kept


def test_check_upload_reads_the_real_dicom():
    dicom = logic.real_radiograph()
    if dicom is None:
        pytest.skip("pydicom-data (the `data` extra) holds RG1_UNCR.dcm")
    image = logic.check_upload(dicom)
    assert image.mode == "L" and max(image.size) == logic.WORK_SIDE


def test_write_examples_makes_synthcxr_studies_and_the_dicom(examples):
    synth = [(path, label) for path, label in examples if label.startswith("SynthCXR")]
    assert len(synth) == 2 and all(Path(p).is_file() and p.endswith(".png") for p, _ in synth)
    if logic.real_radiograph() is not None:
        assert Path(examples[-1][0]).name == "RG1_UNCR.dcm" and "real" in examples[-1][1]


# ---- logic: film, report, selection, counterfactual ------------------------------------------------------------------


def test_structure_masks_unite_groups_and_drop_absent_ones():
    probabilities = np.zeros((3, 4, 5), np.float32)
    probabilities[0, 0, 0] = 0.9
    probabilities[1, 3, 4] = 0.6
    probabilities[2] = 0.4  # below the threshold everywhere
    masks = logic.structure_masks(probabilities, {"pair": [0, 1], "faint": [2]})
    assert list(masks) == ["pair"]
    assert masks["pair"].sum() == 2 and masks["pair"][0, 0] and masks["pair"][3, 4]
    with pytest.raises(ValueError, match="Expected"):
        logic.structure_masks(probabilities[0], {"pair": [0]})


def test_overlay_outlines_masks_on_the_film():
    mask = np.zeros((20, 30), bool)
    mask[5:15, 5:25] = True
    image = Image.new("L", (30, 20))
    film, notes = logic.overlay(image, {"heart": mask})
    assert film is image and [label for _, label in notes] == ["heart"]
    alpha = notes[0][0]
    assert alpha.shape == (20, 30) and alpha[5, 5] == 1.0 and alpha[10, 15] == pytest.approx(0.2)
    assert alpha[0, 0] == 0 and alpha.max() == 1.0


def test_highlight_report_has_one_segment_per_sentence():
    report = "Heart size is normal.  Possible left basal opacity.\nNo effusion."
    grounded = grounded_report(
        report,
        [
            ("Heart size is normal.", {"Cardiomegaly": "negative"}, []),
            ("Possible left basal opacity.", {"Lung Opacity": "uncertain"}, []),
            ("No effusion.", {"Pleural Effusion": "negative", "Edema": "positive"}, []),
        ],
    )
    segments = logic.highlight_report(grounded)
    assert "".join(text for text, _ in segments) == report
    assert [label for _, label in segments] == ["negative", "uncertain", "positive"]
    assert segments[1][0].startswith("Possible")
    assert logic.highlight_report({"report": "", "sentences": []}) == [("(The model wrote an empty report.)", None)]


def test_sentence_selection_draws_its_structures_with_scores():
    structures = [
        {"name": "heart", "score": 0.5, "box": [10, 8, 50, 40]},
        {"name": "left lung", "score": 0.25, "box": [0, 0, 20, 20]},
        {"name": "spine", "score": 0.0, "box": None},
    ]
    grounded = grounded_report(
        "Heart is enlarged.", [("Heart is enlarged.", {"Cardiomegaly": "positive"}, structures)]
    )
    sentence = logic.sentence_at(grounded, 0)
    assert sentence["text"] == "Heart is enlarged."
    assert logic.sentence_at(grounded, 1) is None and logic.sentence_at(grounded, None) is None
    assert logic.sentence_at(grounded, [0, 3]) is sentence
    heart = np.zeros((40, 50), bool)
    heart[10:30, 10:40] = True
    notes = logic.sentence_annotations(sentence, {"heart": heart}, [100, 80], [50, 40])
    assert [label for _, label in notes] == ["heart  +0.500", "left lung  +0.250"]  # spine: no mask, no box
    assert isinstance(notes[0][0], np.ndarray) and notes[0][0].shape == (40, 50)
    assert notes[1][0] == (0, 0, 10, 10)  # the box, scaled from the 100x80 image to the 50x40 film
    details = logic.sentence_details(sentence)
    assert "Cardiomegaly: *positive*" in details and "| heart | +0.500 |" in details
    assert "Click a sentence" in logic.sentence_details(None)


def test_word_diff_marks_added_and_removed_words():
    before, after = "Heart size is normal. No effusion.", "Heart size is enlarged. No effusion."
    diff = logic.word_diff(before, after)
    assert ("normal.", "removed") in diff and ("enlarged.", "added") in diff
    assert "".join(t for t, label in diff if label != "added") == before
    assert "".join(t for t, label in diff if label != "removed") == after
    assert logic.word_diff("Same.", "Same.") == [("Same.", None)]
    assert "same report" in logic.diff_summary("a", "a", "heart")
    assert "changes" in logic.diff_summary("a b", "a c", "heart")


def test_counterfactual_choices_and_their_checks():
    choices = logic.counterfactual_choices(["lungs", "heart", "spine"], {"lungs": [0, 1], "heart": [2]})
    assert choices == [("lungs (group of 2 maps)", "lungs"), ("heart (group of 1 map)", "heart"), ("spine", "spine")]
    assert logic.check_choice("heart", ["heart"]) == "heart"
    with pytest.raises(logic.InputError, match="Pick a structure"):
        logic.check_choice(None, ["heart"])
    with pytest.raises(logic.InputError, match="not a structure"):
        logic.check_choice("liver", ["heart"])


# ---- the Space folder and the app's options ---------------------------------------------------------------------------


def test_space_readme_has_the_space_front_matter():
    import gradio
    import yaml

    _, front, body = (SPACE / "README.md").read_text(encoding="utf-8").split("---\n", 2)
    meta = yaml.safe_load(front)
    assert meta["sdk"] == "gradio" and meta["sdk_version"] == gradio.__version__  # the version the tests ran
    assert meta["app_file"] == "app.py" and (SPACE / meta["app_file"]).is_file()
    assert meta["license"] == "apache-2.0" and meta["pinned"] is False and meta["title"] and meta["emoji"]
    assert "not for clinical use" in body.lower() and "## Licence" in body


def test_space_requirements_install_this_version_of_asarg():
    import tomllib

    import build_space

    version = tomllib.loads((SPACE.parent / "pyproject.toml").read_text())["project"]["version"]
    assert build_space.required_wheel() == f"asarg-{version}-py3-none-any.whl"
    assert all((SPACE / name).is_file() for name in build_space.SPACE_FILES)


def test_model_comes_from_the_flag_then_the_environment(monkeypatch):
    from engine import MODEL_ENV, model_id

    monkeypatch.setenv(MODEL_ENV, "from/env")
    assert model_id("from/flag") == "from/flag" and model_id(None) == "from/env"


@pytest.mark.slow
def test_build_space_writes_the_app_files_and_the_wheel(tmp_path):
    import zipfile

    import build_space

    out = build_space.build(tmp_path / "space")
    wheel = out / build_space.required_wheel()
    assert all((out / name).is_file() for name in build_space.SPACE_FILES)
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {
        "asarg/evaluation/grounding.py",
        "asarg/evaluation/tracing.py",
        "asarg/processing/image_io.py",
        "modeling_asarg/modeling_asarg.py",
    } <= names


# ---- the model side --------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_engine_analyses_a_film_and_removes_a_structure(engine, examples):
    image = logic.check_upload(examples[0][0])
    analysis = engine.analyse(image)
    grounded = analysis.grounded
    assert grounded["report"].strip() and grounded["sentences"]
    assert grounded["image_size"] == list(image.size)
    for sentence in grounded["sentences"]:
        assert set(sentence["labels"].values()) <= OBSERVATION_VALUES
        assert sentence["structures"] and all(s["name"] in engine.structures() for s in sentence["structures"])
    assert set(analysis.masks) <= set(engine.structures())
    assert all(mask.shape == image.size[::-1] for mask in analysis.masks.values())
    assert isinstance(engine.without(image, "heart"), str)
    with pytest.raises(ValueError, match="Unknown structure"):
        engine.without(image, "liver and spleen")


# ---- the server, through gradio_client -------------------------------------------------------------------------------


def client(url):
    from gradio_client import Client

    return Client(url, verbose=False)


def generate(url, path):
    from gradio_client import handle_file

    return client(url).predict(handle_file(str(path)), api_name="/generate")


@pytest.mark.slow
def test_api_generate_returns_report_and_grounded_json(server, examples):
    endpoints = client(server).view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert list(endpoints) == ["/generate"]  # the page's other events are private
    report, grounded = generate(server, examples[0][0])
    assert isinstance(report, str) and report == grounded["report"] and report.strip()
    assert {"report", "image_size", "labels", "sentences"} <= set(grounded)
    sentence = grounded["sentences"][0]
    assert {"text", "span", "labels", "structures"} <= set(sentence)
    assert {"name", "score", "box"} <= set(sentence["structures"][0])


@pytest.mark.slow
def test_api_generate_reads_dicom(server, examples):
    if not examples[-1][0].endswith(".dcm"):
        pytest.skip("pydicom-data (the `data` extra) holds RG1_UNCR.dcm")
    _, grounded = generate(server, examples[-1][0])
    assert max(grounded["image_size"]) == logic.WORK_SIDE


@pytest.mark.slow
def test_ten_concurrent_requests_all_succeed(server, examples):
    with ThreadPoolExecutor(10) as pool:
        results = list(pool.map(lambda i: generate(server, examples[i % 2][0]), range(10)))
    assert len(results) == 10
    for i, (report, grounded) in enumerate(results):
        assert report == results[i % 2][0] and grounded["sentences"]  # greedy: the same film, the same report


@pytest.mark.slow
def test_bad_uploads_get_readable_errors_and_the_server_keeps_serving(server, examples, bad_files):
    import httpx
    from gradio_client.exceptions import AppError

    for kind, message in [("not an image", "not an image file"), ("empty", r"is empty \(0 bytes\)")]:
        with pytest.raises(AppError, match=message):
            generate(server, bad_files[kind])
    # Too large: gradio_client refuses before sending, and the server refuses a raw upload (max_file_size).
    with pytest.raises(ValueError, match="exceeds the maximum file size"):
        generate(server, bad_files["too large"])
    with bad_files["too large"].open("rb") as f:
        response = httpx.post(f"{server}gradio_api/upload", files={"files": ("huge.png", f)}, timeout=60)
    assert response.status_code == 413 and "File size exceeded" in response.text
    report, _ = generate(server, examples[0][0])
    assert report.strip()


@pytest.mark.slow
def test_server_serves_no_arbitrary_files(server):
    import httpx

    for path in ["/etc/passwd", str(Path(__file__).resolve()), str(SPACE / "app.py")]:
        assert httpx.get(f"{server}gradio_api/file={path}", timeout=10).status_code == 403, path


# ---- the page, in a real headless browser ----------------------------------------------------------------------------


def browser():
    """Headless Debian chromium through selenium, or a skip saying what is missing."""
    missing = [name for name in ("chromium", "chromedriver") if shutil.which(name) is None]
    if missing:
        pytest.skip(f"{' and '.join(missing)} not installed (apt-get install -y chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium not installed (pip install selenium)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1400,1300",
    ):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)


def click_button(driver, text: str, prefix: bool = False) -> None:
    from selenium.webdriver.common.by import By

    def match(label: str) -> bool:
        return label.startswith(text) if prefix else label == text

    next(b for b in driver.find_elements(By.TAG_NAME, "button") if match(b.text.strip())).click()


def upload(driver, wait, path) -> None:
    """Put `path` in the film upload (clearing the one there first) and wait for what the page does with it."""
    from selenium.webdriver.common.by import By

    clear = driver.find_elements(By.CSS_SELECTOR, "#upload button[aria-label=Clear]")
    if clear:
        clear[0].click()
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#upload input[type=file]"))
    driver.find_element(By.CSS_SELECTOR, "#upload input[type=file]").send_keys(str(path))


def film_shown(driver) -> bool:
    from selenium.webdriver.common.by import By

    return bool(driver.find_elements(By.CSS_SELECTOR, "[data-testid=annotated-image] img, .image-container img"))


def select_sentence(driver, wait, index: int = 0) -> str:
    """Click a report sentence and wait for its details; returns its text."""
    from selenium.webdriver.common.by import By

    sentence = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#report span.token"))[index]
    text = sentence.text.strip()
    sentence.click()
    wait.until(lambda d: text in d.find_element(By.ID, "sentence-details").text)
    return text


@pytest.fixture
def page(server):
    """(driver, wait) on the app's page, loaded."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver = browser()
    try:
        driver.get(server)
        wait = WebDriverWait(driver, 90)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#upload input[type=file]"))
        yield driver, wait
    finally:
        driver.quit()


@pytest.mark.slow
def test_browser_upload_generate_select_and_remove(page, examples, tmp_path):
    """The real film (DICOM) when pydicom-data is there: a file input, not an image widget, is what takes DICOM."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    driver, wait = page
    shot = Path(os.environ.get("ASARG_DEMO_SCREENSHOT") or tmp_path / "asarg-space.png")
    upload(driver, wait, examples[-1][0])
    wait.until(film_shown)
    click_button(driver, "Generate report")
    first = select_sentence(driver, wait, 0)
    assert first and "score" in driver.find_element(By.ID, "sentence-details").text
    choice = driver.find_element(By.CSS_SELECTOR, "#drop input")
    choice.click()
    choice.send_keys("heart", Keys.ENTER)
    click_button(driver, "Regenerate without it")
    wait.until(lambda d: "Without heart" in d.find_element(By.TAG_NAME, "body").text)
    time.sleep(1)  # the selected sentence's masks load as images
    shot.parent.mkdir(parents=True, exist_ok=True)
    assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 10_000


@pytest.mark.slow
def test_browser_bad_upload_shows_the_error_and_the_page_keeps_working(page, examples, bad_files, tmp_path):
    from selenium.webdriver.common.by import By

    driver, wait = page
    upload(driver, wait, bad_files["not an image"])
    toast = "[data-testid=toast-text]"
    wait.until(lambda d: any("not an image file" in t.text for t in d.find_elements(By.CSS_SELECTOR, toast)))
    shot = Path(os.environ.get("ASARG_DEMO_SCREENSHOT") or tmp_path / "asarg-space.png")
    assert driver.save_screenshot(str(shot.with_name(shot.stem + "-bad-upload.png")))
    driver.find_element(By.CSS_SELECTOR, "#upload button[aria-label=Clear]").click()
    click_button(driver, examples[0][1].split(":")[0], prefix=True)  # "SynthCXR s2024-000000"
    wait.until(film_shown)
    click_button(driver, "Generate report")
    assert select_sentence(driver, wait, 0)


def test_the_engine_refuses_a_film_that_is_not_a_chest_radiograph_and_names_its_model(engine):
    with pytest.raises(logic.InputError, match="Not read: the image is blank"):
        engine.analyse(Image.new("L", (300, 300), 0))
    with pytest.raises(logic.InputError, match="Modality is CT"):
        engine.analyse(Image.new("L", (300, 300), 0).point(lambda v: v), {"Modality": "CT"})
    description = engine.describe()
    assert ".cache" not in description and "default-model-" not in description


def test_the_engine_segments_a_film_once_for_report_tracing_and_overlay(engine, examples):
    """One segmenter run for the input check, one shared by the report, its tracing and the overlay."""
    runs = []
    handle = engine.model.model.segmenter.register_forward_hook(lambda module, args, out: runs.append(1))
    try:
        engine.analyse(logic.check_upload(examples[0][0]))
    finally:
        handle.remove()
    assert len(runs) == 2


def test_a_finding_traced_sentence_says_what_the_model_read_in_readable_units():
    """Method `finding`: the verdict in percent, each structure's share of the classifier's attention in percent; a
    sentence that asserts nothing says so."""
    structures = [{"name": "left lung", "score": 0.42, "box": [0, 0, 20, 20]}]
    grounded = grounded_report("Small effusion.", [("Small effusion.", {"Pleural Effusion": "positive"}, structures)])
    sentence = logic.sentence_at(grounded, 0) | {
        "method": "finding",
        "finding": "Pleural Effusion (left)",
        "confidence": 0.84,
    }
    details = logic.sentence_details(sentence)
    assert "**Pleural Effusion (left)** in this film at 84%" in details and "| left lung | 42% |" in details
    assert "share of the classifier's attention" in details
    assert [label for _, label in logic.sentence_annotations(sentence, {}, [100, 80], [50, 40])] == ["left lung  42%"]
    quiet = sentence | {"finding": None, "confidence": None, "structures": []}
    assert "asserts no finding" in logic.sentence_details(quiet)
