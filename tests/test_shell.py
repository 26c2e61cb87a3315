"""Printed commands: every value survives bash and Hydra's parser as printed; plain values print plainly."""

import shlex
import sys

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from hypothesis import given, settings
from hypothesis import strategies as st

from makemore.shell import hydra_value, override, program, train_command

texts = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), min_size=1, max_size=30)


@settings(max_examples=300, deadline=None)
@given(text=texts)
def test_printed_overrides_survive_bash_and_hydra(text):
    word = override("rerun", text)
    [as_bash_passes_it] = shlex.split(word)  # POSIX shell quoting, as bash reads the pasted word
    assert OverridesParser.create().parse_override(as_bash_passes_it).value() == text.replace("${", "\\${")


def test_plain_values_are_printed_plainly():
    assert (
        train_command("rerun", "outputs/2026-11-23/10-00-00_mlp_abc")
        == "python train.py rerun=outputs/2026-11-23/10-00-00_mlp_abc"
    )
    assert train_command("rerun", "out/1_model=mlp,steps=2") == "python train.py 'rerun=\"out/1_model=mlp,steps=2\"'"
    assert hydra_value("123") == '"123"'  # a number-looking path stays a string


@pytest.mark.parametrize(
    "argv0, started, trainer",
    [
        ("/repo/train.py", "python train.py", "python train.py"),
        ("sweep.py", "python sweep.py", "python train.py"),
        ("/venv/bin/makemore-train", "makemore-train", "makemore-train"),
        ("/venv/bin/makemore-sweep", "makemore-sweep", "makemore-train"),
        ("/venv/lib/python3.11/site-packages/makemore/__main__.py", "python -m makemore", "python -m makemore"),
        ("/usr/bin/pytest", "python pytest", "python train.py"),
        ("/venv/lib/python3.11/site-packages/pytest/__main__.py", "python pytest/__main__.py", "python train.py"),
    ],
)
def test_printed_commands_name_the_program_that_printed_them(monkeypatch, argv0, started, trainer):
    monkeypatch.setattr(sys, "argv", [argv0, "steps=5"])
    assert program() == started
    assert train_command("rerun", "outputs/a b") == f"{trainer} {override('rerun', 'outputs/a b')}"
