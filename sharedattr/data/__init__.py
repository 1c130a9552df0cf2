"""Data in: stimulus sets and recorded responses."""

from sharedattr.data.responses import Responses, load_responses
from sharedattr.data.stimuli import DataError, StimulusSet

__all__ = ["DataError", "Responses", "StimulusSet", "load_responses"]
