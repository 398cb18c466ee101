"""A real PACS (issue 23): Orthanc with its DICOMweb plugin, started on a loopback port with a temporary configuration
and storage, and stopped by the test. The film, the SEG and the SR go in through STOW-RS (`dicomweb-client`, and
`asarg send`), come back in QIDO-RS queries, and the SR retrieved with WADO-RS has its sentences and segment
references intact. `asarg send` names an unreachable server and a rejecting one (exit 2)."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
from conftest import xray_like

from asarg.cli import main

pytest.importorskip("highdicom", reason="the `dicom` extra writes SEG and SR")
pytest.importorskip("dicomweb_client", reason="the `dicom` extra (dicomweb-client) speaks DICOMweb")

PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
REPORT = "Mild cardiomegaly. No pleural effusion. Possible small left pneumothorax."

pytestmark = pytest.mark.skipif(
    shutil.which("Orthanc") is None or not PLUGIN.is_file(),
    reason="Orthanc and its DICOMweb plugin (Debian orthanc, orthanc-dicomweb) are not installed",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory):
    """The DICOMweb root of a fresh Orthanc on 127.0.0.1 (its own storage), stopped after the module."""
    import requests

    root = tmp_path_factory.mktemp("orthanc")
    port = free_port()
    config = {
        "Name": "asarg-test",
        "StorageDirectory": str(root / "db"),
        "IndexDirectory": str(root / "db"),
        "HttpPort": port,
        "HttpBindAddress": "127.0.0.1",
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomServerEnabled": False,
        "DicomPort": free_port(),
        "Plugins": [str(PLUGIN)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
    }
    (root / "orthanc.json").write_text(json.dumps(config), encoding="utf-8")
    log = (root / "orthanc.log").open("w")
    process = subprocess.Popen(["Orthanc", str(root / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(150):
            try:
                if requests.get(f"{url}/dicom-web/studies", timeout=1).status_code == 200:
                    break
            except requests.exceptions.ConnectionError:
                pass
            if process.poll() is not None:
                pytest.fail(f"Orthanc exited: {(root / 'orthanc.log').read_text()[-2000:]}")
            time.sleep(0.1)
        else:
            pytest.fail("Orthanc did not answer in 15 s")
        yield f"{url}/dicom-web"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@pytest.fixture(scope="module")
def written(tmp_path_factory, rg1_path):
    """SEG + SR of RG1_UNCR.dcm and of a PNG film (tiny model, a given report)."""
    import torch

    from asarg.evaluation.dicom_report import write_grounded_dicom
    from asarg.training.tiny import tiny_asarg_config, tiny_processor, tiny_tokenizer
    from modeling_asarg import AsargForConditionalGeneration

    tokenizer = tiny_tokenizer()
    config = tiny_asarg_config(tokenizer, seg_class_names=["heart", "right lung", "left lung", "spine"])
    torch.manual_seed(0)
    model = AsargForConditionalGeneration(config).eval()
    processor = tiny_processor(tokenizer, config)
    root = tmp_path_factory.mktemp("written")
    xray_like(48, 40).save(root / "film.png")
    return {
        "dcm": write_grounded_dicom(model, processor, rg1_path, root, report=REPORT, top=2),
        "png": write_grounded_dicom(model, processor, root / "film.png", root, report=REPORT, top=2),
        "rg1": rg1_path,
    }


def test_stow_qido_wado_round_trip_keeps_sentences_and_references(orthanc, written):
    import pydicom
    from dicomweb_client.api import DICOMwebClient

    from asarg.processing.dicom_out import read_sr_sentences

    client = DICOMwebClient(url=orthanc)
    files = [written["rg1"], written["dcm"]["seg"], written["dcm"]["sr"]]
    datasets = [pydicom.dcmread(str(path)) for path in files]
    response = client.store_instances(datasets=datasets)
    assert not response.get("FailedSOPSequence")
    film, seg, sr = datasets
    study = str(film.StudyInstanceUID)
    # QIDO-RS: the study holds the film's series, the SEG's and the SR's, with the right modalities.
    series = {
        s["0020000E"]["Value"][0]: s["00080060"]["Value"][0]
        for s in client.search_for_series(study_instance_uid=study)
    }
    assert series == {film.SeriesInstanceUID: "CR", seg.SeriesInstanceUID: "SEG", sr.SeriesInstanceUID: "SR"}
    patients = client.search_for_studies(search_filters={"PatientID": str(film.PatientID)})
    assert [p["0020000D"]["Value"][0] for p in patients] == [study]
    # WADO-RS: the SR as stored, its sentences, labels and segment references intact.
    back = client.retrieve_instance(study, str(sr.SeriesInstanceUID), str(sr.SOPInstanceUID))
    sentences = read_sr_sentences(back)
    assert sentences == read_sr_sentences(sr)
    assert [s["text"] for s in sentences] == [s["text"] for s in written["dcm"]["grounded"]["sentences"]]
    assert sentences[0]["labels"] == {"Cardiomegaly": "positive"}
    assert {ref["seg_uid"] for s in sentences for ref in s["structures"]} == {str(seg.SOPInstanceUID)}
    segments = {
        int(d.SegmentNumber)
        for d in client.retrieve_instance(study, str(seg.SeriesInstanceUID), str(seg.SOPInstanceUID)).SegmentSequence
    }
    assert {ref["segment"] for s in sentences for ref in s["structures"]} <= segments


def test_asarg_send_stores_a_png_films_set(orthanc, written, capsys):
    import pydicom
    from dicomweb_client.api import DICOMwebClient

    files = [str(written["png"][k]) for k in ("image", "seg", "sr")]
    assert main(["send", "--dicomweb", orthanc, *files]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[:2] for line in lines] == [[f, "stored"] for f in files]
    study = str(pydicom.dcmread(files[0]).StudyInstanceUID)
    found = DICOMwebClient(url=orthanc).search_for_instances(study_instance_uid=study)
    assert len(found) == 3


def test_asarg_send_names_an_unreachable_or_rejecting_server(orthanc, written, capsys):
    sr = str(written["dcm"]["sr"])
    closed = f"http://127.0.0.1:{free_port()}/dicom-web"
    assert main(["send", "--dicomweb", closed, sr, "--timeout", "5"]) == 2
    err = capsys.readouterr().err.strip()
    assert "unreachable" in err and len(err.splitlines()) == 1 and "Traceback" not in err
    wrong_root = orthanc.replace("/dicom-web", "/no-such-root")
    assert main(["send", "--dicomweb", wrong_root, sr]) == 2
    err = capsys.readouterr().err.strip()
    assert "rejected" in err and "HTTP 404" in err and len(err.splitlines()) == 1
