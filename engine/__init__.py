"""ftdyn's engine: fine-tuning, feature capture, similarity metrics, analyses and the run record.

The public entry point for any training loop is :class:`engine.monitor.Monitor` (``from engine
import Monitor``), with callbacks for Lightning (``engine.callbacks.lightning.FeatureDynamics``) and
the Hugging Face ``Trainer`` (``engine.callbacks.hf.FeatureDynamics``). They are imported on first use:
the app reads run directories through torch-free modules of this package (record, report) and must
start without importing torch.
"""

__all__ = ["Monitor", "hookable_layers"]


def __getattr__(name: str):
    if name in __all__:
        from engine import monitor

        return getattr(monitor, name)
    raise AttributeError(f"module 'engine' has no attribute {name!r}")
