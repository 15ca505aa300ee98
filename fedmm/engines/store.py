"""A client's own model state on disk, one safetensors file per finished round.

The algorithm (:func:`fedmm.federated.client.client_round`) takes the client's state of the
previous round as arrays and returns the new one; a store is where an engine keeps it
between rounds. :class:`ClientStore` (the simulator: every round present) keeps the last
two; :class:`ClientStateStore` (a deployed client's ``state/`` folder) tolerates rounds the
client missed.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from fedmm.federated.client import load_model_state, model_state
from fedmm.io import load_arrays, save_arrays
from fedmm.models.model import FedMMModel

_ROUND_FILE = re.compile(r"round_(\d{4,})\.safetensors$")


class ClientStore:
    """A client's model state after each round it trained, in ``folder`` (last two kept)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def path(self, round_idx: int) -> Path:
        return self.folder / f"round_{round_idx:04d}.safetensors"

    def read(self, round_idx: int) -> dict[str, np.ndarray] | None:
        """The state saved after round ``round_idx`` (missing file: FileNotFoundError)."""
        return load_arrays(self.path(round_idx))

    def write(self, state: dict[str, np.ndarray], round_idx: int) -> None:
        save_arrays(self.path(round_idx), state)
        self.path(round_idx - 2).unlink(missing_ok=True)

    def load(self, model: FedMMModel, round_idx: int) -> bool:
        """Load the state of round ``round_idx`` into ``model``; False when there is none to load."""
        state = self.read(round_idx)
        if state is None:
            return False
        load_model_state(model, state)
        return True

    def save(self, model: FedMMModel, round_idx: int) -> None:
        self.write(model_state(model), round_idx)


class ClientStateStore(ClientStore):
    """A deployed client's model state in its own folder; tolerates rounds it missed.

    ``read(r)`` returns the newest state saved at or before round ``r`` (a client that was
    offline for a round continues from its last one), None when there is none (the model
    stays freshly initialised).
    """

    def rounds(self) -> list[int]:
        if not self.folder.is_dir():
            return []
        return sorted(int(m.group(1)) for p in self.folder.iterdir() if (m := _ROUND_FILE.match(p.name)))

    def read(self, round_idx: int) -> dict[str, np.ndarray] | None:
        done = [r for r in self.rounds() if r <= round_idx]
        return super().read(done[-1]) if done else None

    def write(self, state: dict[str, np.ndarray], round_idx: int) -> None:
        super().write(state, round_idx)
        for r in self.rounds():
            if r < round_idx - 1:
                self.path(r).unlink(missing_ok=True)
