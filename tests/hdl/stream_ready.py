"""A random ``ready`` pattern for the output stream of a block under test (cocotb and pytest)."""

from __future__ import annotations

import random


class Ready:
    """``ready`` low with probability ``stall``, in runs of 1..``burst`` cycles."""

    def __init__(self, rng: random.Random, stall: float, burst: int = 1):
        self.rng, self.stall, self.burst, self.left = rng, stall, burst, 0

    def next(self) -> bool:
        if self.left > 0:
            self.left -= 1
            return False
        if self.rng.random() < self.stall:
            self.left = self.rng.randint(1, self.burst) - 1
            return False
        return True
