"""The grid's embeddings, computed before the first run that reads them and cached in the benchmark
folder (``embeddings/<source>[_s<seed>]/``) with the data's split fingerprint and the encoder's
sha1, the way ``ssl-emp curate`` caches its own: a killed sweep finishes a pre-run from its last
checkpoint, and reuses embeddings whose record matches, instead of doing either again.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from ssl_emp.benchmark.grid import compress_schedule
from ssl_emp.benchmark.sources import EmbeddingSource
from ssl_emp.config import Config, finalize
from ssl_emp.curate.embed import cached_embeddings, embed, file_hash
from ssl_emp.data import load_data
from ssl_emp.data.fingerprint import split_fingerprint
from ssl_emp.errors import ConfigError
from ssl_emp.pruning import FULL_DATA
from ssl_emp.run.layout import RunLayout
from ssl_emp.runtime import resolve_device


def train_or_resume(cfg: Config) -> dict[str, Any]:
    """The summary of the run ``cfg`` describes: read if it finished, else resumed from its last
    checkpoint, else trained (pretrain itself restarts a run killed before its first checkpoint)."""
    from ssl_emp.train import pretrain  # the trainer only when something trains

    layout = RunLayout(cfg.output_dir)
    try:
        return json.loads(layout.summary.read_text())
    except (OSError, json.JSONDecodeError):  # none yet, or killed while writing it: the checkpoint resumes
        return pretrain(copy.deepcopy(cfg), resume=layout.last.is_file())


def prerun_config(base: Config, source: EmbeddingSource, seed: int, out: str | Path) -> Config:
    """A pre-run: the base config and seed on full data for ``prerun_epochs``, the schedule compressed."""
    assert source.prerun_epochs is not None
    cfg = copy.deepcopy(base)
    cfg.seed = seed
    cfg.pruning.method, cfg.pruning.rate, cfg.pruning.params, cfg.pruning.embeddings = FULL_DATA, 0.0, {}, None
    compress_schedule(cfg, source.prerun_epochs)
    cfg.eval.eval_every = 0  # kNN before and after only: the pre-run is a means, not a result
    cfg.output_dir = str(source.folder(out, seed) / "prerun")
    cfg.progress = False
    return finalize(cfg)


def _encoder_visits(checkpoint: Path) -> int | None:
    """What training a checkpoint's encoder cost, when it is a run's final.pt with its summary beside."""
    summary = RunLayout(checkpoint.parent.parent).summary
    try:
        return int(json.loads(summary.read_text())["images_seen"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def prepare_embeddings(source: EmbeddingSource, base: Config, seed: int, out: str | Path) -> Path:
    """The embeddings file of (``source``, ``seed``), computed unless its cached record matches."""
    folder = source.folder(out, seed)
    folder.mkdir(parents=True, exist_ok=True)
    if source.checkpoint is not None:
        checkpoint = Path(source.checkpoint).expanduser()
        if not checkpoint.is_file():
            raise ConfigError(f"grid.embeddings.{source.name}.checkpoint not found: {checkpoint}")
        meta = {"source": source.name, "checkpoint": str(checkpoint), "encoder_visits": _encoder_visits(checkpoint)}
    else:
        summary = train_or_resume(prerun_config(base, source, seed, out))
        checkpoint = RunLayout(folder / "prerun").final
        meta = {"source": source.name, "prerun_epochs": source.prerun_epochs,
                "prerun_visits": summary["images_seen"], "prerun_time_s": summary["wall_time_s"]}
    cfg = finalize(copy.deepcopy(base))
    key = {"data_fingerprint": split_fingerprint(cfg.data), "checkpoint_sha1": file_hash(checkpoint)}

    def compute() -> Any:
        from ssl_emp.eval.from_checkpoint import backbone_from_checkpoint

        backbone, trained = backbone_from_checkpoint(str(checkpoint))
        # the encoder's own input pipeline (its normalisation), the base config's data, as curate does
        cfg.algorithm, cfg.model, cfg.augment = trained.algorithm, trained.model, trained.augment
        cfg.progress = False
        return embed(backbone, load_data(cfg.data).train, cfg, resolve_device(cfg.device), "train")

    cached_embeddings(folder, "train", key, compute, meta)
    return source.array(out, seed)

