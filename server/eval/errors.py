"""Exception types of the evaluation harness: each message says which file and what to fix."""
from __future__ import annotations


class EvalError(ValueError):
    """Base class: the inputs of an evaluation are unusable as given."""


class DatasetError(EvalError):
    """A data set directory or file does not have the layout or fields its loader expects."""


class PredictionsError(EvalError):
    """An answer file is malformed, or its ids do not match the data set being scored."""


class ReportError(EvalError):
    """A report file is not a report this harness wrote (missing keys, not JSON)."""
