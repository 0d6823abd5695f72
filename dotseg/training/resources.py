"""What a training run holds on a Ray cluster: one accounting for ``dotseg train`` and every sweep trial.

A run holds its Train workers' CPUs (and GPUs) and runs ``data.synth_tasks`` Ray Data synthesis
tasks beside them. Ray Data runs fewer tasks at once when fewer CPUs are free, so a run *starts*
with its workers plus one task's CPUs (:attr:`RunNeed.least_cpus`) and runs at full speed with
all of them (:attr:`RunNeed.cpus`). Checks refuse what can never start, with the numbers, instead
of letting Ray wait forever; an embedded Ray and a sweep's concurrency are sized for full speed.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dotseg.config import Config

_EPS = 1e-9


@dataclass(frozen=True, slots=True)
class RunNeed:
    workers: int
    cpus_per_worker: float
    use_gpu: bool
    synth_tasks: int
    cpus_per_task: float
    driver_cpus: float = 0.0
    """A trial driver's own reservation (a Tune trial that starts a Train run), 0 for ``dotseg train``."""

    @classmethod
    def of(cls, cfg: Config, driver_cpus: float = 0.0) -> RunNeed:
        t, d = cfg.train, cfg.data
        return cls(t.num_workers, t.cpus_per_worker, t.use_gpu, d.synth_tasks, d.cpus_per_task, driver_cpus)

    @property
    def cpus(self) -> float:
        """CPUs at full speed: the workers, every synthesis task, the driver."""
        return self.workers * self.cpus_per_worker + self.synth_tasks * self.cpus_per_task + self.driver_cpus

    @property
    def least_cpus(self) -> float:
        """CPUs to start at all: the workers, one synthesis task, the driver."""
        return self.workers * self.cpus_per_worker + self.cpus_per_task + self.driver_cpus

    @property
    def gpus(self) -> float:
        return float(self.workers) if self.use_gpu else 0.0

    def unfit(self, resources: dict[str, float]) -> str | None:
        """Why a run can never start on a cluster with ``resources`` (one line with the numbers), or None."""
        have_cpu, have_gpu = resources.get("CPU", 0.0), resources.get("GPU", 0.0)
        if self.least_cpus > have_cpu + _EPS:
            driver = f" + {self.driver_cpus:g} for the trial's driver" if self.driver_cpus else ""
            return (
                f"the cluster has {have_cpu:g} CPUs but {self.workers} worker(s) x {self.cpus_per_worker:g} CPUs "
                f"+ {self.cpus_per_task:g} for a synthesis task{driver} need {self.least_cpus:g}; lower "
                f"train.num_workers / train.cpus_per_worker / data.cpus_per_task or add nodes"
            )
        if self.gpus > have_gpu + _EPS:
            return (
                f"--gpu asks for {self.workers} GPU(s) but the cluster has {have_gpu:g}; "
                "drop --gpu or use fewer workers"
            )
        return None

    def how_many_fit(self, resources: dict[str, float]) -> int:
        """Runs that fit at once at full speed (at least 1 if one can start; 0 if none can)."""
        if self.unfit(resources) is not None:
            return 0
        fit = math.floor(resources.get("CPU", 0.0) / self.cpus + _EPS)
        if self.use_gpu:
            fit = min(fit, math.floor(resources.get("GPU", 0.0) / self.gpus + _EPS))
        return max(1, fit)

    def local_cpus(self, runs: int = 1) -> int:
        """Logical CPUs for an embedded local Ray hosting ``runs`` of these at full speed: at least the
        machine's, so a 2-core laptop can host 2 workers plus synthesis (they share the cores)."""
        return max(os.cpu_count() or 1, math.ceil(runs * self.cpus - _EPS))
