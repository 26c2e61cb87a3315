"""Run a named sweep, `python sweep.py sweep=models`, or rebuild a leaderboard, `python sweep.py report=outputs`."""

from pathlib import Path

from makemore.entrypoints import sweep

if __name__ == "__main__":
    sweep(Path(__file__).resolve().parent / "conf")
