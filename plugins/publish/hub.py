"""Uploading the publish folder to a Hugging Face Hub model repo through huggingface_hub.

The token comes from HF_TOKEN or the login (`hf auth login`), read by huggingface_hub; it
is handed to the client and never written anywhere. An upload that fails part way can be
run again: the Hub answers that LFS files it already holds need no upload, so only what is
missing goes up. A transient failure (a 5xx, a dropped connection) is retried here first.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import HfApi, get_token
# HTTPError: the base of whatever HTTP client huggingface_hub uses (httpx, httpx2), so no client is named here
from huggingface_hub.errors import HfHubHTTPError, HTTPError, HFValidationError
from huggingface_hub.utils import validate_repo_id
from tenacity import retry, retry_if_exception, stop_after_attempt, wait_exponential

from clood_candy.errors import UserError

ATTEMPTS = 4
NO_TOKEN = ("no Hugging Face token: set HF_TOKEN to a write token, or run `hf auth login` "
            "(clood reads it from there and never stores it)")


@dataclass
class Uploaded:
    repo_id: str
    url: str  # the repo's page
    commit_url: str
    files: list[str]
    private: bool


def _status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


def _transient(exc: BaseException) -> bool:
    if not isinstance(exc, HTTPError):
        return False
    status = _status(exc)
    return status is None or status >= 500 or status == 429  # no status: the connection itself failed


def _explain(exc: BaseException, repo_id: str) -> str:
    status = _status(exc)
    if status == 401:
        return "the Hub refused the token (401): check HF_TOKEN or run `hf auth login` again"
    if status == 403:
        return f"the token may not write to {repo_id} (403): it needs the write role, and the namespace must be yours"
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"{first} (HTTP {status})" if status else first


def check_repo_id(repo_id: str) -> None:
    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        raise UserError(f"--repo '{repo_id}' is not a Hub repo id (user/name): {str(exc).splitlines()[0]}") from None
    if repo_id.count("/") != 1:
        raise UserError(f"--repo '{repo_id}' needs its namespace: user/name (or org/name)")


def upload(folder: Path, repo_id: str, *, private: bool, endpoint: str, message: str,
           attempts: int | None = None) -> Uploaded:
    """Create the repo if it is new (private if asked) and commit the folder to it."""
    check_repo_id(repo_id)
    token = get_token()
    if not token:
        raise UserError(NO_TOKEN)
    api = HfApi(endpoint=endpoint, token=token)
    again = retry(retry=retry_if_exception(_transient), stop=stop_after_attempt(attempts or ATTEMPTS),
                  wait=wait_exponential(multiplier=0.5, max=8), reraise=True)
    try:
        again(api.whoami)()
        repo = again(api.create_repo)(repo_id, private=private, exist_ok=True, repo_type="model")
        info = again(api.upload_folder)(repo_id=repo_id, folder_path=folder, commit_message=message,
                                        repo_type="model")
        is_private = bool(getattr(again(api.model_info)(repo_id), "private", private))
    except HTTPError as exc:
        raise UserError(f"upload to {repo_id} on {endpoint} failed: {_explain(exc, repo_id)}; run clood publish "
                        "again: files the Hub already holds are not sent twice") from None
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    return Uploaded(repo_id=repo_id, url=str(repo), commit_url=info.commit_url, files=files, private=is_private)
