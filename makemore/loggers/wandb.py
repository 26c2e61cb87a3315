"""Weights & Biases through the real wandb library: offline by default (`wandb sync` uploads a run later), online
with logger.wandb.mode=online or WANDB_MODE.

Online never costs a run: without credentials it is refused before anything is written (`preflight`), and a
server that does not answer within logger.wandb.init_timeout seconds sends the run offline with one warning that
prints the `wandb sync` command to upload it later; the process's later runs (a sweep's members) go offline at
once, without waiting or warning again.
"""

from __future__ import annotations

import json
import netrc
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional
from urllib.parse import urlparse

from makemore.errors import MakemoreError
from makemore.fields import one_of, ranged
from makemore.loggers import RunInfo, why_unreachable
from makemore.shell import shell_word

UNREACHED: list[str] = []  # the W&B servers this process could not reach: its later runs log offline at once


@dataclass
class WandbSettings:
    """logger.wandb: where the run goes in W&B."""

    project: str = "makemore"  # the W&B project
    entity: Optional[str] = None  # the team or user; null: the logged-in user's default
    group: Optional[str] = None  # null: a sweep member joins the group named after its sweep directory
    tags: List[str] = field(default_factory=list)  # labels to filter runs by in W&B
    mode: str = ranged(one_of("offline", "online", "disabled"), "offline")  # WANDB_MODE wins
    init_timeout: float = 30.0  # seconds to reach the server online; then the run goes on offline


class WandbLogger:
    """A real wandb run in the run's directory, named after the run; a resumed run logs into the same W&B run."""

    Settings = WandbSettings

    def __init__(self, run: RunInfo, **settings):
        wanted = WandbSettings(**settings)
        try:
            import wandb
        except ImportError:
            raise MakemoreError("logger=wandb needs the wandb package; pip install -e '.[wandb]'") from None
        self.wandb = wandb
        mode = os.environ.get("WANDB_MODE", wanted.mode)
        options = dict(
            project=wanted.project,
            entity=wanted.entity,
            group=wanted.group or run.sweep,
            tags=list(wanted.tags),
            dir=str(run.run_dir),
            name=run.name,
            id=run.run_id,
            resume="allow" if run.resumed_at is not None else None,
            config={**run.hparams, "provenance": run.provenance},  # the HParams, and where they came from
            reinit="create_new",  # a population's members log into runs open side by side in one process
        )
        unreachable = ""  # why the server did not answer, the first time this process asked it
        if mode == "online" and server() not in UNREACHED:
            unreachable = why_unreachable(f"{server().rstrip('/')}/graphql", wanted.init_timeout, data=b"{}")
            if unreachable:
                UNREACHED.append(server())
        if mode == "online" and server() in UNREACHED:
            mode = "offline"
        settings = wandb.Settings(init_timeout=wanted.init_timeout) if mode == "online" else None
        self.run = wandb.init(mode=mode, settings=settings, **options)
        if unreachable:
            print(
                f"warning: W&B at {server()} is out of reach ({unreachable}; "
                f"logger.wandb.init_timeout={wanted.init_timeout:g}); {run.name} and this process's later runs "
                "log offline: upload one later with "
                f"wandb sync {shell_word(str(self.run.settings.sync_dir))}",
                file=sys.stderr,
                flush=True,
            )

    @staticmethod
    def preflight(settings: dict) -> None:
        """Refuse online logging without credentials, before the run writes anything."""
        if os.environ.get("WANDB_MODE", settings.get("mode")) == "online" and not has_credentials():
            raise MakemoreError(
                f"logger.wandb.mode=online needs W&B credentials for {server()}: run `wandb login`, set "
                "WANDB_API_KEY, or log offline (logger.wandb.mode=offline, the default) and `wandb sync` later"
            )

    def scalars(self, step: int, values: dict[str, float]) -> None:
        self.run.log(values, step=step)

    def text(self, tag: str, text: str, step: int) -> None:
        self.run.log({tag: self.wandb.Html(f"<pre>{text}</pre>")}, step=step)

    def image(self, tag: str, image, step: int) -> None:
        self.run.log({tag: self.wandb.Image(image)}, step=step)

    def summary(self, hparams: dict, metrics: dict[str, float], step: int) -> None:
        self.scalars(step, metrics)
        self.run.summary.update(metrics)

    def target_line(self, target: float, curve: list[tuple[int, float]]) -> None:
        """The target in the summary, and a chart of the run's dev loss beside it as a level line."""
        steps = [step for step, _ in curve]
        chart = self.wandb.plot.line_series(
            xs=steps,
            ys=[[dev for _, dev in curve], [target] * len(curve)],
            keys=["loss/dev", f"target {target}"],
            title="loss/dev against the target",
            xname="step",
        )
        self.run.log({"loss/dev against the target": chart}, step=steps[-1] if steps else 0)
        self.run.summary["target"] = target

    def close(self) -> None:
        if self.run.settings.mode == "offline":  # an online run's files/ get these from W&B itself
            write_readable_files(Path(self.run.dir), dict(self.run.config), dict(self.run.summary))
        self.run.finish()  # every job finishes its run, or a multirun waits on it forever


def server() -> str:
    """The W&B server runs go to: WANDB_BASE_URL, or W&B's own."""
    return os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")


def has_credentials() -> bool:
    """An API key in the environment, an identity token, or `wandb login`'s entry in ~/.netrc for the server."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(urlparse(server()).hostname or "") is not None
    except (OSError, netrc.NetrcParseError):
        return False


def write_readable_files(files: Path, config: dict, summary: dict) -> None:
    """An offline run's config and summary as W&B writes them into an online run's files/: config.yaml (each key
    as `{value: ...}`) and wandb-summary.json, so they can be read without W&B's binary log."""
    import yaml

    files.mkdir(parents=True, exist_ok=True)
    readable = {key: {"value": value} for key, value in config.items() if not key.startswith("_")}
    (files / "config.yaml").write_text(yaml.safe_dump(readable, sort_keys=False), encoding="utf-8")
    plain = {key: value for key, value in summary.items() if isinstance(value, int | float | str | bool)}
    (files / "wandb-summary.json").write_text(json.dumps(plain, indent=2, default=str) + "\n", encoding="utf-8")
