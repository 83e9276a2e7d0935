"""`ftdyn run` as one process of a distributed run whose process 1 fails in its first training epoch
with a one-line error (tests/test_distributed.py starts it under torchrun)."""

import sys

from engine import training
from engine.errors import FtdynError
from ftdyn_tui.cli import main

MESSAGE = "disk full writing 'x' (made to fail by the test)"
train_epoch = training.Trainer.train_epoch


def failing_epoch(self, epoch):
    if self.processes.rank == 1:
        raise FtdynError(MESSAGE)
    return train_epoch(self, epoch)


if __name__ == "__main__":
    training.Trainer.train_epoch = failing_epoch
    sys.argv = ["ftdyn", *sys.argv[1:]]
    main()
