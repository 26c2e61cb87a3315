"""The model's pictures for the dashboard, drawn off a run's critical path: a process forked as the run starts
imports matplotlib (~0.5 s) on the idle core while the run trains, and draws from the run's model.pt when told.
Where that cannot be done safely (not Linux, a GPU, more than one thread), or the process died, the run draws
them itself; either way makemore.plots draws them, the same pixels."""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import sys
import threading
from pathlib import Path
from typing import NoReturn

import numpy as np
import torch
from torch import nn

from makemore.data import Vocab

Images = dict[str, np.ndarray]  # each picture by its dashboard tag: RGB, height x width x 3, uint8


def may_fork(device: torch.device, threads: int) -> bool:
    """fork() copies only the thread that calls it: safe here only in a process that runs no other thread (and no
    OpenMP team: one torch thread), on the CPU (CUDA refuses a forked child), on Linux (macOS's libraries do not
    survive a fork)."""
    return sys.platform.startswith("linux") and device.type == "cpu" and threads == 1 and threading.active_count() == 1


class PictureProcess:
    """A forked process that draws the model's pictures once, from the weights the run has saved."""

    def __init__(self, model: nn.Module, vocab: Vocab, model_path: Path):
        told_read, self.told = os.pipe()
        self.answer, answer_write = os.pipe()
        for stream in (sys.stdout, sys.stderr):  # what is buffered would be written twice, once by each process
            stream.flush()
        self.pid = os.fork()
        if self.pid == 0:
            os.close(self.told)
            os.close(self.answer)
            draw_when_told(told_read, answer_write, model, vocab, model_path)
        os.close(told_read)
        os.close(answer_write)

    def draw(self) -> tuple[Images, set[str]] | None:
        """The pictures and the characters without a glyph; None if the process died before it answered."""
        try:
            os.write(self.told, b"1")
            with open(self.answer, "rb", closefd=False) as answer:
                drawn = answer.read()
        except BrokenPipeError:  # it died before it was told
            drawn = b""
        self.close()
        try:
            return pickle.loads(drawn)
        except (pickle.UnpicklingError, EOFError):  # no answer, or the start of one: it died
            return None

    def close(self) -> None:
        """Untold, it reads the end of its pipe and exits; told, it has exited. Either way, reaped here."""
        if self.pid:
            os.close(self.told)
            os.close(self.answer)
            os.waitpid(self.pid, 0)
            self.pid = 0


def draw_when_told(told: int, answer: int, model: nn.Module, vocab: Vocab, model_path: Path) -> NoReturn:
    """The forked process: matplotlib imported at once, the pictures drawn when the run writes a byte, nothing
    done when it closes the pipe (or dies). It never returns into the run's code, and writes nothing of the run's."""
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the run's to handle; this process follows its pipe
        for descriptor in map(int, os.listdir("/proc/self/fd")):  # the run's lock, files and pipes stay the run's
            if descriptor > 2 and descriptor not in (told, answer):
                with contextlib.suppress(OSError):  # listdir's own, closed already
                    os.close(descriptor)
        from makemore import plots  # the import this process is for, while the run trains

        if os.read(told, 1):
            model.load_state_dict(torch.load(model_path, map_location="cpu", weights_only=True)["model"])
            with open(answer, "wb") as out:
                pickle.dump(plots.model_images(model, vocab), out)
    finally:
        os._exit(0)  # an error ends it silently: the run, reading no answer, draws the pictures itself


def draw(model: nn.Module, vocab: Vocab, process: PictureProcess | None) -> Images:
    """The model's pictures, from its process where it has one and it answers, else drawn here; a note on stderr
    names the characters matplotlib's font cannot draw."""
    drawn = process.draw() if process else None
    if drawn is None:
        from makemore.plots import model_images  # matplotlib takes 0.5 s to import: only where it draws

        drawn = model_images(model, vocab)
    images, missing = drawn
    if missing:
        print(
            f"note: {len(missing)} characters have no glyph in matplotlib's font and show as boxes in the "
            "figures (install a font that has them, e.g. Noto, to see them)",
            file=sys.stderr,
        )
    return images
