"""Training of the paper's three networks.

Plain PyTorch loops (`classifier.py`, `gan.py`, sharing `loop.py`) take a batch iterator and a
`report(metrics, checkpoint_state)` callback; `data.py` turns a manifest into batches; `curves.py`
writes the loss and validation curves; `ray_train.py` is the only module here that imports Ray.
"""

from attrgan.train.train_config import PRESETS, TrainConfig, load_train_config, preset

__all__ = ["PRESETS", "TrainConfig", "load_train_config", "preset"]
