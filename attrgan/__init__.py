"""attrgan: people attribute recognition with restoration GANs.

    import attrgan

    df = attrgan.load_pipeline("demo-out/bundle").predict(["photo.jpg", "crops/"])

`load_pipeline` is the Python side of `attrgan predict` (attrgan.predict); the batch jobs are the
`attrgan` command's other subcommands (attrgan.cli).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from attrgan.predict import Predictor

__all__ = ["load_pipeline"]


def load_pipeline(bundle: str, *, pipeline: Any = None, storage: Any = None, batch_size: int = 16) -> Predictor:
    """Load a model bundle (local folder or s3://) for `predict(images) -> pandas.DataFrame`.

    pipeline: an `attrgan.pipeline.PipelineConfig` (thresholds, device, which restorations run);
    storage: an `attrgan.config.StorageConfig` (default: from the environment).
    """
    from attrgan.config import StorageConfig
    from attrgan.pipeline import PipelineConfig
    from attrgan.predict import PredictConfig, Predictor

    config = PredictConfig(bundle=str(bundle), batch_size=batch_size, pipeline=pipeline or PipelineConfig(),
                           storage=storage or StorageConfig.from_env())
    return Predictor.from_config(config)
