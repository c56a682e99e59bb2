"""The interface every inference backend implements."""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np

from cellos_inference.core.tensor_check import InputSpec


class BackendError(RuntimeError):
    """A model that cannot be loaded or run by this backend, with the backend's reason."""


@dataclass
class LoadedModel:
    """A model ready to run. ``run`` takes a full batch and returns outputs in ``outputs`` order."""

    inputs: list[InputSpec]
    outputs: list[str]
    precision: str
    max_batch: int
    runner: object = field(repr=False, default=None)

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.runner(feeds)

    def close(self) -> None:
        close = getattr(self.runner, 'close', None)
        if close:
            close()


class Backend(ABC):
    name: str = ''

    @abstractmethod
    def load(self, path: str, model_id: str, max_batch: int) -> LoadedModel:
        """Load the ONNX file at ``path`` (content id ``model_id``); raise BackendError."""

    def describe(self) -> str:
        return self.name

    def close(self) -> None:
        """Release process-wide resources (CUDA context, thread pools)."""
