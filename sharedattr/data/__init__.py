"""Data in: stimulus sets and recorded responses."""

from .responses import Responses, load_responses
from .stimuli import DataError, StimulusSet

__all__ = ["DataError", "Responses", "StimulusSet", "load_responses"]
