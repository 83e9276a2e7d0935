"""The monitor (engine.monitor) as a callback of other training loops: ``lightning`` (PyTorch
Lightning's Trainer, extra ``.[lightning]``) and ``hf`` (Hugging Face transformers' Trainer, extra
``.[hf]``). Each module imports its framework, so import the one your loop uses."""
