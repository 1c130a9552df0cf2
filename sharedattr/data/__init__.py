"""Data in: stimulus sets and recorded responses."""

from sharedattr.data.responses import Responses, load_responses
from sharedattr.data.stimuli import StimulusSet
from sharedattr.runtime.errors import DataError

__all__ = ["DataError", "Responses", "StimulusSet", "load_responses"]
