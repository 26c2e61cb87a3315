"""No password in any record: a password typed into a URL on the command line moves to the environment variable its
backend reads (before Hydra sees the command, so no saved config, log or printed command holds it), a password
written into a config file is refused, and every URL the project prints or logs shows a password as `***`.

PostgreSQL reads PGPASSWORD (or ~/.pgpass), MLflow's client MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD:
their own documented ways, which a rerun or a continued sweep finds in its environment. A URL may also take its
password as `${oc.env:VAR}` in the sweep's storage, which Hydra records as written.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable

from makemore.errors import MakemoreError
from makemore.shell import shell_word

# scheme://user:password@ (a password never holds '@' or whitespace unescaped); the scheme and user are kept.
PASSWORD = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^/\s:@'\"]*:)(?P<password>[^@\s'\"/]+)(?=@)")
# A secret in a URL's query: ?password=..., &token=...
QUERY_SECRET = re.compile(r"(?P<head>[?&](?:password|passwd|pwd|token|access_token|api_key|apikey|secret)=)[^&\s'\"]+")
HIDDEN = "***"
ENVIRONMENT = re.compile(r"\$\{oc\.env:([A-Za-z_][A-Za-z0-9_]*)[^}]*\}")  # ${oc.env:VAR} or ${oc.env:VAR,default}


def redact(text: str) -> str:
    """`text` with every URL's password (and secret query value) shown as ***; `${oc.env:VAR}` kept as written."""
    text = PASSWORD.sub(lambda m: m.group(0) if m["password"].startswith("${") else m["head"] + HIDDEN, text)
    return QUERY_SECRET.sub(lambda m: m["head"] + HIDDEN, text)


def shell_url(url: str) -> str:
    """A URL as a bash word that works when pasted: its `${oc.env:VAR}` as bash's `${VAR}` inside double quotes;
    any other password hidden."""
    if not ENVIRONMENT.search(url):
        return shell_word(redact(url))
    return '"' + re.sub(r'(["\\`])', r"\\\1", ENVIRONMENT.sub(r"${\1}", url)) + '"'


def passwords_moved_out(args: Iterable[str]) -> list[str]:
    """The command's overrides with each URL's typed password moved to the variable its backend reads (set here,
    for this process and every worker it starts). A password no backend reads from the environment is refused."""
    moved = []
    for arg in args:
        key, _, value = arg.partition("=")
        found = PASSWORD.search(value)
        if not found or found["password"].startswith("${"):
            moved.append(arg)
            continue
        scheme = value[found.start() : value.index("://", found.start())].lower()
        user = found["head"][found["head"].index("://") + 3 : -1]
        password = found["password"]
        without = value[: found.start()] + found["head"][:-1] + value[found.end() :]  # scheme://user@host
        if scheme.startswith("postgres"):
            os.environ["PGPASSWORD"] = password
        elif key.lstrip("+~").endswith("tracking_uri") and scheme in ("http", "https"):
            os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = user, password
            without = value[: found.start()] + value[found.start() :].replace(f"{user}:{password}@", "", 1)
        else:
            refuse_written_passwords([(key.lstrip("+~"), value)])
        moved.append(f"{key}={without}")
    return moved


def refuse_written_passwords(values: Iterable[tuple[str, str]]) -> None:
    """Refuse a password that would reach a record (`values`: each key and its unresolved string): one written in
    plain text into a config file, or an interpolation outside Hydra's node (which is saved as written; the run's
    own keys are saved resolved)."""
    for key, value in values:
        found = PASSWORD.search(value)
        if found and (key.startswith("hydra.") and found["password"].startswith("${")):
            continue
        if found:
            raise MakemoreError(
                f"{key} holds a password, which would be written into every run's record; set it in the "
                "environment instead (PGPASSWORD for PostgreSQL, MLFLOW_TRACKING_USERNAME and "
                "MLFLOW_TRACKING_PASSWORD for MLflow, or ${oc.env:VAR} for the password in hydra.sweeper.storage)"
            )
