"""Errors of vertical federated learning, so a caller can tell bad data from a failed party."""
from __future__ import annotations

from typing import Any

from .errors import FederatedError


class VerticalError(FederatedError):
    """Base of the errors raised on purpose by the vertical-FL modules."""


class PartyDataError(VerticalError):
    """A party's CSV is unusable: missing id/label column, duplicate ids, non-numeric features."""


class AlignmentError(VerticalError):
    """The parties' rows do not line up (different counts after PSI, unknown tags, no shared ids)."""


class MalformedTensor(VerticalError):
    """An embedding or gradient payload failed to decode or has the wrong shape, NaN or Inf."""


class PartyDropped(VerticalError):
    """A party stopped answering mid-training; ``resume`` holds what ``fit(resume=...)`` needs.

    Every party snapshots its state at the start of each epoch, so resuming rolls all parties back
    to the epoch that was interrupted and replays it: never a half-updated, silently wrong model.
    """

    def __init__(self, party: str, epoch: int, step: int, reason: str, resume: dict[str, Any]):
        super().__init__(f"party {party!r} dropped out at epoch {epoch}, step {step}: {reason}; "
                         f"state saved, resume from epoch {resume['epoch']} with fit(resume=...)")
        self.party, self.epoch, self.step, self.reason, self.resume = party, epoch, step, reason, resume
