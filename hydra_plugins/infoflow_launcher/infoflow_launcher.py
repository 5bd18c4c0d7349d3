"""infoflow's launcher plugin (``hydra/launcher=infoflow``): a config node and a class that
delegates to :mod:`infoflow.sweep.launcher`, as Hydra's own launcher plugins do."""

from collections.abc import Sequence
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from infoflow.sweep.launcher import LauncherConf, launch

ConfigStore.instance().store(
    group="hydra/launcher", name="infoflow", node=LauncherConf, provider="infoflow"
)


class InfoflowLauncher(Launcher):
    """Plans a sweep (jobs that differ only in ``seed`` as one stack, jobs of one training key
    sharing their evaluation passes) and runs its independent units in worker processes or
    as Slurm jobs (``hydra.launcher.n_workers``, ``hydra.launcher.executor``)."""

    #: every job's config is composed before any job starts (the plan needs them all): the
    #: check infoflow's sweeper would otherwise make by composing each a second time
    composes_every_job_first = True

    def __init__(self, **options: Any) -> None:
        super().__init__()
        self.options = options  # validated when the sweep launches, before any job starts
        self.config: DictConfig | None = None
        self.task_function: TaskFunction | None = None
        self.hydra_context: HydraContext | None = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        return launch(self, job_overrides, initial_job_idx)
