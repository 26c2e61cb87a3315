"""Commands the project prints (rerun, resume, continue, suggestions), quoted so they work pasted into bash as shown."""

from __future__ import annotations

import functools
import re
import shlex

from hydra.errors import HydraException

SHELL_PLAIN = re.compile(r"[A-Za-z0-9_./=:,@%+-]+")  # bash passes these through unchanged, unquoted


@functools.lru_cache(maxsize=1)
def override_parser():
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create()


def hydra_value(text: str) -> str:
    """`text` written so that Hydra's override parser reads it back as that exact string."""
    try:
        if override_parser().parse_override(f"key={text}").value() == text:
            return text
    except HydraException:
        pass
    # Inside double quotes Hydra takes every character literally but for quotes, backslashes before a quote,
    # and `${` (an interpolation).
    escaped = re.sub(r'(\\*)("|$)', lambda m: m.group(1) * 2 + ("\\" + m.group(2) if m.group(2) else ""), text)
    return '"' + escaped.replace("${", "\\${") + '"'


def shell_word(text: str) -> str:
    """`text` as one bash word: unquoted when bash would leave it alone, else single-quoted."""
    return text if SHELL_PLAIN.fullmatch(text) else shlex.quote(text)


def override(key: str, value: object) -> str:
    """`key=value` as one bash word that Hydra reads back as exactly that value."""
    return shell_word(f"{key}={hydra_value(str(value))}")


def train_command(key: str, value: object) -> str:
    """`python train.py key=value`, quoted so that it works when pasted into bash as printed."""
    return f"python train.py {override(key, value)}"
