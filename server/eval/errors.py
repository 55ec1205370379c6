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


class ServiceError(EvalError):
    """The model service cannot be used for this run (unreachable, wrong URL or key, still busy after the
    retries): the run stops, answers so far are kept, and a rerun resumes."""


class RequestError(EvalError):
    """One question's request failed (the service rejected its input, or gave no answer in time): recorded as
    that question's error in the answer file, and asked again on the next run."""

    def __init__(self, message: str, status: int = 0, error_type: str = "", code: object = None) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.code = code

    def to_json(self) -> dict:
        return {"message": str(self), "type": self.error_type or None, "code": self.code, "status": self.status}
