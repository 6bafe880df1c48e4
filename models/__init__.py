"""The PTalker network: configuration, layers, encoders, the model and its losses."""
from .config import LossWeights, PTalkerConfig
from .ptalker import PTalker

__all__ = ["LossWeights", "PTalker", "PTalkerConfig"]
