"""``python -m infoflow`` (and the ``infoflow`` command): the Hydra entry point, wiring only.

One job is one network, one data set, one optimizer and one seed; a multirun (``-m``) is a
sweep. infoflow's launcher (the default) plans a sweep and runs its stacks through
:mod:`infoflow.sweep.runner`; under another launcher each job comes through :func:`main`.
"""

from __future__ import annotations

import gc
import logging
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from infoflow.paths import config_dir
from infoflow.sweep.job import Interrupted, interrupt_exit, register_resolvers
from infoflow.sweep.runner import open_job, run_stack

register_resolvers()
# a log line that cannot be written (a full disk) must not print a traceback of its own: the
# job's status and the sweep's summary say what failed, in one line
logging.raiseExceptions = False


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="config")
def main(cfg: DictConfig) -> None:
    """One job, as a stack of one."""
    setup = open_job(cfg, HydraConfig.get())
    if setup is not None:
        run_stack([setup])


def cli() -> None:
    """The command line: an interrupt that arrives outside a job (between a sweep's jobs, while
    it merges) ends it with one line too."""
    try:
        main()
    except KeyboardInterrupt as err:
        name = err.args[0] if isinstance(err, Interrupted) and err.args else "SIGINT"
        print(f"infoflow: interrupted by {name}", file=sys.stderr)
        raise interrupt_exit(err) from None
    finally:
        # what is alive now lives until the exit: freezing it spares the interpreter's last
        # collection a walk over torch's and Hydra's millions of objects (0.6 s of CPU)
        gc.freeze()


if __name__ == "__main__":
    cli()
