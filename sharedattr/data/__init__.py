"""Data in: stimulus sets and recorded responses."""

from .responses import Responses
from .stimuli import DataError, StimulusSet

__all__ = ["DataError", "Responses", "StimulusSet"]
