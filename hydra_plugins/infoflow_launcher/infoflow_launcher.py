"""The launcher class and its config node ``hydra/launcher: infoflow`` (infoflow.launcher)."""

# no "from __future__ import annotations": Hydra's plugin scan runs this module before it is
# in sys.modules, where dataclasses would look the string annotations up

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


@dataclass
class InfoflowLauncherConf:
    _target_: str = "hydra_plugins.infoflow_launcher.infoflow_launcher.InfoflowLauncher"
    # most seeds trained as one stacked model (memory); larger seed groups are split
    max_stack: int = 32


ConfigStore.instance().store(
    group="hydra/launcher", name="infoflow", node=InfoflowLauncherConf, provider="infoflow"
)


class InfoflowLauncher(Launcher):
    """Runs a sweep in this process, seeds that differ only in ``seed`` as one stacked model."""

    def __init__(self, **options: Any) -> None:
        super().__init__()
        self.options = options  # validated when the sweep launches, before any job starts
        self.config: DictConfig | None = None
        self.task_function: TaskFunction | None = None
        self.hydra_context: HydraContext | None = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        from infoflow.launcher import compose_once

        compose_once(hydra_context)  # the sweeper's check and this launcher share compositions
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        from infoflow.launcher import launch

        return launch(self, job_overrides, initial_job_idx)
