"""Retraining in the loop: fine-tune the current model on the project's masks, in the background.

A job exports the annotated images as SA-1B (the format ``segany train`` reads), runs the
paper's recipe (``segany.train.Trainer``: simulated clicks and boxes, focal + dice + IoU loss)
for the requested steps, saves the weights as ``models/v<N>.safetensors`` and records model
version N. The new version becomes current; masks keep the version that made them.
With the encoder frozen (the default: fast on CPU) the new version reuses its parent's image
embeddings.
"""

from __future__ import annotations

import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import sessionmaker

from segany.errors import InputError
from segany.server.db import ModelVersion, TrainJob, now


class Retrainer:
    def __init__(
        self,
        root: Path,
        sessions: sessionmaker,
        export_sa1b: Callable[[Path], int],
        hub: Any,
    ) -> None:
        self.root = root
        self.sessions = sessions
        self.export_sa1b = export_sa1b
        self.hub = hub
        self._busy = threading.Lock()
        self.thread: threading.Thread | None = None

    def start(self, steps: int, masks_per_image: int, lr: float, freeze: str) -> int:
        """Queue a job and start it on a thread; one job at a time."""
        if not self._busy.acquire(blocking=False):
            raise InputError("a retraining job is already running; wait for it to finish")
        try:
            with self.sessions.begin() as s:
                job = TrainJob(steps=steps, base_version=self.hub.current, status="queued")
                s.add(job)
                s.flush()
                job_id = job.id
        except BaseException:
            self._busy.release()
            raise
        args = (job_id, steps, masks_per_image, lr, freeze)
        self.thread = threading.Thread(target=self._run, args=args, daemon=True)
        self.thread.start()
        return job_id

    def _set(self, job_id: int, **values: Any) -> None:
        with self.sessions.begin() as s:
            job = s.get(TrainJob, job_id)
            assert job is not None
            for k, v in values.items():
                setattr(job, k, v)

    def _run(self, job_id: int, steps: int, masks_per_image: int, lr: float, freeze: str) -> None:
        try:
            self._set(job_id, status="running", message="exporting the annotations")
            version = self._train(job_id, steps, masks_per_image, lr, freeze)
            self._set(
                job_id,
                status="done",
                step=steps,
                result_version=version,
                message=f"model version {version} is ready and now current",
                finished_at=now(),
            )
        except Exception as e:  # noqa: BLE001 - a failed job reports why, the server lives on
            traceback.print_exc()
            message = f"{type(e).__name__}: {e}"
            self._set(job_id, status="failed", message=message, finished_at=now())
        finally:
            self._busy.release()

    def _train(self, job_id: int, steps: int, masks_per_image: int, lr: float, freeze: str) -> int:
        import copy

        from segany.checkpoints import save_model
        from segany.train.datasets import SA1BDataset
        from segany.train.trainer import TrainConfig, Trainer

        run = self.root / "train" / f"job-{job_id}"
        data = run / "data"
        data.mkdir(parents=True, exist_ok=True)
        if self.export_sa1b(data) == 0:
            raise InputError("no accepted masks to train on yet")
        base = self.hub.current
        model = copy.deepcopy(self.hub.model(base)).float()
        cfg = TrainConfig(
            out_dir=str(run),
            steps=steps,
            batch_size=1,
            masks_per_image=masks_per_image,
            lr=lr,
            warmup_steps=min(10, steps),
            layer_decay=0.8,
            freeze=freeze,
            device="cpu",
            amp=False,
            val_every=10**9,
            ckpt_every=10**9,
            log_every=10**9,
            progress=False,
        )
        dataset = SA1BDataset(data, int(model.image_size))
        trainer = Trainer(model, cfg, dataset)
        self._set(job_id, message="training")
        last: dict[str, Any] = {}
        while trainer.step < steps:
            last = trainer.train_step()
            self._set(job_id, step=trainer.step, message=f"loss {last['loss']:.4f}")
        model.eval()
        with self.sessions.begin() as s:
            version = int(s.scalar(select(func.max(ModelVersion.version))) or 0) + 1
            path = self.root / "models" / f"v{version}.safetensors"
            save_model(model, path)
            encoder = self.hub.encoder_version(base) if freeze != "none" else version
            s.add(
                ModelVersion(
                    version=version,
                    source=f"models/v{version}.safetensors",
                    parent=base,
                    note=f"retrained {steps} steps on {len(dataset)} images (job {job_id})",
                    metrics={"final_loss": last.get("loss"), "encoder_version": encoder},
                    active_at=now(),
                )
            )
        self.hub.register(version, str(path), encoder)
        self.hub.add_loaded(version, model)
        self.hub.current = version
        return version

    def jobs(self) -> list[TrainJob]:
        """Every retraining job, newest first."""
        with self.sessions() as s:
            return list(s.scalars(select(TrainJob).order_by(TrainJob.id.desc())))

    def switch(self, version: int) -> None:
        """Make ``version`` current (a switch, or a roll back to an earlier one); kept across
        restarts. Masks keep the version that made them."""
        from segany.server.project import NotFound

        with self.sessions.begin() as s:
            row = s.get(ModelVersion, version)
            if row is None:
                raise NotFound(f"no model version {version}")
            row.active_at = now()
        self.hub.current = version

    def job(self, job_id: int) -> TrainJob:
        from segany.server.project import NotFound

        with self.sessions() as s:
            job = s.get(TrainJob, job_id)
        if job is None:
            raise NotFound(f"no retraining job with id {job_id}")
        return job
