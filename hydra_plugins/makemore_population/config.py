"""The population launcher's settings, registered as Hydra's own launchers register theirs
(`hydra/launcher=population`): a value of the wrong type is refused while the config is composed."""

from dataclasses import dataclass
from typing import Optional

from hydra.core.config_store import ConfigStore


@dataclass
class PopulationLauncherConf:
    _target_: str = "hydra_plugins.makemore_population.population_launcher.PopulationLauncher"
    # Members stacked in one population at most; more wait for the next. Memory caps it too. On a CPU, past ~16 tiny
    # MLPs per process the stacked tensors outgrow the cache and a member-step costs more; a GPU takes hundreds.
    max_members: int = 16
    # Processes a population is split across, each training its share of the members side by side on the members'
    # own `threads` (1 by default, as their solo runs); null: one per core on a CPU (a process per core runs ~20%
    # more member-steps than two threads of one) once the population has 1,000 member-steps to train (20,000 where
    # the workers cannot be forked from the sweep's process and each imports torch), else one.
    workers: Optional[int] = None
    # Restarts a worker's members get when their worker process dies (SIGKILL, the OOM killer, a segfault): each
    # restart continues them from their checkpoints in a fresh worker, to their uninterrupted losses. Past it, they are
    # recorded interrupted, the rest of the sweep finishes, and it exits 1 with the command that continues them.
    max_failures: int = 1
    # Print the plan (each population's members and what they differ in, who trains alone and why, member-steps,
    # the wall time a short probe of each estimates) and stop before anything is written. With Optuna: its first
    # batch, as a new study would ask for it.
    plan: bool = False
    # End the sweep at the first member that fails, with its error (what finished is kept: the same command
    # continues it). Off, a failed member is recorded and the others run; the sweep exits 1 at its end either way.
    fail_fast: bool = False


ConfigStore.instance().store(
    group="hydra/launcher", name="population", node=PopulationLauncherConf, provider="makemore"
)
