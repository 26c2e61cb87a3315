"""TensorBoard: each run's event files in its own directory, so `tensorboard --logdir outputs` shows one run per
directory. The view over all of them (HParams columns, custom scalars, level lines) is makemore.dashboard's."""

from __future__ import annotations

from dataclasses import dataclass

from makemore.loggers import RunInfo


@dataclass
class TensorBoardSettings:
    """logger.tensorboard: no settings; the events go to the run's directory."""


class TensorBoardLogger:
    """A SummaryWriter in the run's directory; its HParams row named after the run (and its sweep)."""

    Settings = TensorBoardSettings

    def __init__(self, run: RunInfo):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(run.run_dir), purge_step=run.resumed_at)
        self.trial = f"{run.name} ({run.sweep})" if run.sweep else run.name  # sweeps meet in one HParams table

    def scalars(self, step: int, values: dict[str, float]) -> None:
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)

    def text(self, tag: str, text: str, step: int) -> None:
        self.writer.add_text(tag, text, step)

    def image(self, tag: str, image, step: int) -> None:
        self.writer.add_image(tag, image, step, dataformats="HWC")

    def summary(self, hparams: dict, metrics: dict[str, float], step: int) -> None:
        # add_hparams would open a sub-run; writing the session summaries here keeps HParams on this run. The
        # experiment summary (which columns TensorBoard shows) is the view's: see report.refresh_dashboard.
        from tensorboard.plugins.hparams import plugin_data_pb2
        from torch.utils.tensorboard.summary import hparams as hparams_summaries

        _, session_start, session_end = hparams_summaries(hparams, metrics)
        plugin = session_start.value[0].metadata.plugin_data  # the HParams table's Trial ID: the run's own name
        data = plugin_data_pb2.HParamsPluginData.FromString(plugin.content)
        data.session_start_info.group_name = self.trial
        plugin.content = data.SerializeToString()
        self.writer.file_writer.add_summary(session_start)
        self.writer.file_writer.add_summary(session_end)
        self.scalars(step, metrics)

    def target_line(self, target: float, curve: list[tuple[int, float]]) -> None:
        """TensorBoard draws the target once for every run under a view (makemore.report.refresh_dashboard)."""

    def close(self) -> None:
        self.writer.close()
