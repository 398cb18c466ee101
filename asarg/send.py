"""`asarg send`: store DICOM files (a film, and the SEG + SR `asarg generate --dicom-out` wrote) in a PACS through
DICOMweb.

    asarg send --dicomweb http://pacs:8042/dicom-web out/*.dcm [--timeout 30]

Every file is read first (a missing, unreadable or non-DICOM file is named, exit 2, and nothing is sent); then all of
them go in one STOW-RS request (`dicomweb-client`), and each stored instance is looked up again with QIDO-RS. A
server that cannot be reached ("unreachable"), answers with an HTTP error or lists failed instances ("rejected"), or
does not find an instance it said it stored ("not found after storing") is named in one line on stderr, exit 2.
Nothing is written locally.
"""

from __future__ import annotations

import argparse
import os
import sys


class SendError(Exception):
    """A DICOMweb failure, named for the user (unreachable / rejected / not found)."""


def _parse(argv):
    p = argparse.ArgumentParser(prog="asarg send", description=__doc__.split("\n\n")[0])
    p.add_argument("files", nargs="+", help="DICOM files (Part 10)")
    p.add_argument("--dicomweb", required=True, metavar="URL", help="the DICOMweb root, e.g. http://pacs/dicom-web")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per request (default %(default)s)")
    return p.parse_args(argv)


def read_files(paths) -> list:
    """pydicom Datasets of `paths`, or ValueError naming the first missing, folder or non-DICOM path."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    datasets = []
    for path in paths:
        if os.path.isdir(path):
            raise ValueError(f"{path} is a folder; give DICOM files (e.g. {path}/*.dcm).")
        if not os.path.isfile(path):
            raise ValueError(f"no such file: {path}")
        try:
            ds = pydicom.dcmread(path)
        except (InvalidDicomError, OSError, ValueError, EOFError) as error:
            raise ValueError(f"{path}: not a DICOM Part 10 file ({error}).") from error
        if "SOPInstanceUID" not in ds or "StudyInstanceUID" not in ds:
            raise ValueError(f"{path}: no SOP / study instance UID; a PACS cannot store it.")
        datasets.append(ds)
    return datasets


def _client(url: str, timeout: float):
    import requests
    from dicomweb_client.api import DICOMwebClient

    session = requests.Session()
    session.request = _with_timeout(session.request, timeout)
    client = DICOMwebClient(url=url.rstrip("/"), session=session)
    client.set_http_retry_params(retry=False)  # its default retries an unreachable server for half a minute
    return client


def _with_timeout(request, timeout):
    def call(*args, **kwargs):
        kwargs.setdefault("timeout", timeout)
        return request(*args, **kwargs)

    return call


def send(url: str, datasets, timeout: float = 30.0) -> list[tuple[str, str]]:
    """Store `datasets` at the DICOMweb root `url` (STOW-RS), check each with QIDO-RS; returns (study UID, SOP
    instance UID) of each. Raises SendError (unreachable / rejected / not found after storing)."""
    import requests

    client = _client(url, timeout)
    try:
        response = client.store_instances(datasets=list(datasets))
    except requests.exceptions.HTTPError as error:
        status = getattr(error.response, "status_code", "?")
        raise SendError(f"{url} rejected the instances (STOW-RS: HTTP {status}: {_reason(error)}).") from error
    except requests.exceptions.RequestException as error:
        raise SendError(f"{url} is unreachable ({type(error).__name__}: {_short(error)}).") from error
    failed = response.get("FailedSOPSequence", []) if response is not None else []
    if failed:
        uids = ", ".join(str(item.get("ReferencedSOPInstanceUID", "?")) for item in failed[:3])
        raise SendError(f"{url} rejected {len(failed)} of {len(datasets)} instances (STOW-RS failed: {uids}).")
    stored = []
    for ds in datasets:
        try:
            found = client.search_for_instances(
                study_instance_uid=str(ds.StudyInstanceUID), search_filters={"SOPInstanceUID": str(ds.SOPInstanceUID)}
            )
        except requests.exceptions.RequestException as error:
            raise SendError(
                f"{url}: QIDO-RS after storing failed ({type(error).__name__}: {_short(error)})."
            ) from error
        if not found:
            raise SendError(f"{url} did not list instance {ds.SOPInstanceUID} after storing it (QIDO-RS).")
        stored.append((str(ds.StudyInstanceUID), str(ds.SOPInstanceUID)))
    return stored


def _reason(error) -> str:
    response = getattr(error, "response", None)
    text = (getattr(response, "reason", "") or "") if response is not None else ""
    return text or _short(error)


def _short(error) -> str:
    return " ".join(str(error).split())[:200]


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if not args.dicomweb.startswith(("http://", "https://")):
        print(f"asarg send: --dicomweb {args.dicomweb!r} is not an http(s) URL.", file=sys.stderr)
        return 2
    try:
        datasets = read_files(args.files)
    except ValueError as error:
        print(f"asarg send: {error}", file=sys.stderr)
        return 2
    try:
        import dicomweb_client  # noqa: F401
    except ImportError:
        print("asarg send: needs dicomweb-client: pip install 'asarg[dicom]'", file=sys.stderr)
        return 2
    try:
        stored = send(args.dicomweb, datasets, args.timeout)
    except SendError as error:
        print(f"asarg send: {error}", file=sys.stderr)
        return 2
    for path, (study, sop) in zip(args.files, stored):
        print(f"{path}\tstored\tstudy {study}\tinstance {sop}")
    return 0


__all__ = ["SendError", "main", "read_files", "send"]
