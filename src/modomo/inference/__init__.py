"""The AI pipeline: detect → segment → depth → colours on batches of scenes, with the host
work (decoding, per-scene post-processing, storage) in host processes beside the device.

* :mod:`modomo.inference.stages` -- the stages and how a failure names its stage;
* :mod:`modomo.inference.pipeline` -- :class:`DetectionPipeline`: the models on a batch;
* :mod:`modomo.inference.scene` -- one scene's outputs turned into rows and palettes;
* :mod:`modomo.inference.host` -- :func:`pipelined`: decode, infer and finish overlapped on
  a bounded pool of host threads;
* :mod:`modomo.inference.host_processes` -- :class:`HostProcesses`: the host work in separate
  processes, each scene decoded and finished in one of them;
* :mod:`modomo.inference.clock` -- seconds per stage, for the benchmarks.

Free of Celery and the database: the tasks in :mod:`modomo.tasks.detection_tasks` store and
count what this returns.
"""

from modomo.inference.clock import StageClock
from modomo.inference.host import Outcome, default_host_threads, host_pool, pipelined
from modomo.inference.host_processes import (
    HostedScene,
    HostProcessError,
    HostProcesses,
    host_processes,
)
from modomo.inference.pipeline import INPUT_SIDE, DetectionPipeline, SceneInput
from modomo.inference.scene import SAMPLE_PIXELS, Inferred, SceneResult, finish_scene
from modomo.inference.stages import STAGES, failed_stage, parse_stages

__all__ = [
    "INPUT_SIDE",
    "SAMPLE_PIXELS",
    "STAGES",
    "DetectionPipeline",
    "HostProcessError",
    "HostProcesses",
    "HostedScene",
    "Inferred",
    "Outcome",
    "SceneInput",
    "SceneResult",
    "StageClock",
    "default_host_threads",
    "failed_stage",
    "finish_scene",
    "host_pool",
    "host_processes",
    "parse_stages",
    "pipelined",
]
