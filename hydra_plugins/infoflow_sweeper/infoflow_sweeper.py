"""infoflow's sweeper plugin (``hydra/sweeper=infoflow``): a config node and a class that
delegates to :mod:`infoflow.sweep.sweeper`, as Hydra's own sweeper plugins do."""

from collections.abc import Sequence
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.plugins import Plugins
from hydra.plugins.launcher import Launcher
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from infoflow.sweep.sweeper import SweeperConf, sweep

ConfigStore.instance().store(
    group="hydra/sweeper", name="infoflow", node=SweeperConf, provider="infoflow"
)


class InfoflowSweeper(Sweeper):
    """Hydra's basic sweep (the cartesian product of the swept values), each job composed once:
    by infoflow's launcher, which composes them all before it starts any, or else by the
    sweeper's check of the batch as in Hydra's basic sweeper."""

    def __init__(self, max_batch_size: int | None = None, params: Any = None) -> None:
        super().__init__()
        self.max_batch_size = max_batch_size
        self.params = dict(params or {})
        self.config: DictConfig | None = None
        self.launcher: Launcher | None = None
        self.hydra_context: HydraContext | None = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> Sequence[Any]:
        return sweep(self, arguments)
