"""The data engine at scale: annotate whole collections, resumable, locally or on Ray.

- ``sources``: folders, globs, manifests of paths, SA-1B tar shards -> ``Item``s with stable keys
- ``annotate``: a worker's job for one image (``MaskGenerator``, fully or semi-automatic)
- ``output``: sharded SA-1B JSON with staging, atomic shards, manifest, errors, summary
- ``shards`` / ``worker``: what a worker writes itself (staged results, the shards it completes)
- ``local`` / ``ray_executor``: worker processes or Ray actors, one model each
  (``raysession``: Ray started or joined on loopback unless a remote cluster is named)
- ``sizing``: workers per machine or Ray node from memory, cores and GPUs (``--workers auto``)
- ``plan``: what a run would do (images, done, workers, a measured sample, an estimate)
- ``run``: ``run_engine(EngineConfig)``; ``check``: ``verify`` and ``stats`` of an output
- ``rounds``: model in the loop (annotate -> fine-tune -> re-annotate)

The engine holds no segmentation logic: it calls ``segany.MaskGenerator``, ``segany.formats``
and the trainer.
"""

from segany.engine.annotate import Annotator, Task, WorkerSpec, decode_image
from segany.engine.run import EngineConfig, default_threads, run_engine
from segany.engine.sources import Item, list_items

__all__ = [
    "Annotator",
    "EngineConfig",
    "Item",
    "Task",
    "WorkerSpec",
    "decode_image",
    "default_threads",
    "list_items",
    "run_engine",
]
