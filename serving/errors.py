"""The errors of the prediction API: one kind per problem, one table of their statuses.

Every error body is ``{"kind": ..., "detail": ...}``. The service and the routes name a
kind; its HTTP status is in :data:`STATUS_BY_KIND` alone. A kind that reports an error of
the platform's own hierarchy answers that error's family status
(:func:`core.errors.http_status_for`), so that number is written once too.
"""

from __future__ import annotations

from typing import Literal, get_args

from core.errors import ChurnError, OnlineStoreUnavailable, http_status_for
from serving.features import ProblemKind

# The kinds answered with 503 and a Retry-After header.
UnavailableKind = Literal[
    "store_unavailable", "no_model", "overloaded", "deadline_exceeded", "auth_unavailable"
]
ErrorKind = (
    ProblemKind
    | UnavailableKind
    | Literal["payload_too_large", "invalid_request", "unauthorized", "forbidden", "internal_error"]
)
# Seconds a caller is told to wait while no model is served (a load takes about that).
NO_MODEL_RETRY_AFTER_S = 5

# The one table of this API's error statuses, by kind.
STATUS_BY_KIND: dict[str, int] = {
    # a row problem: unknown user, stale or missing features, nothing to predict from
    **dict.fromkeys(get_args(ProblemKind), 404),
    "unauthorized": 401,
    "forbidden": 403,
    "payload_too_large": 413,
    "invalid_request": 422,
    "internal_error": 500,
    "no_model": 503,
    "overloaded": 503,
    "deadline_exceeded": 503,
    "auth_unavailable": 503,
    "store_unavailable": http_status_for(OnlineStoreUnavailable()),
}


class ServingError(ChurnError):
    """A request that cannot be answered with a prediction; its kind decides its status.

    ``detail`` is shown to the caller: it names the problem, never internal text (hosts,
    paths, exception messages), which goes to the log instead.

    Args:
        kind: What went wrong (the error body's ``kind``); the status is
            ``STATUS_BY_KIND[kind]``.
        detail: The message for the caller.
        retry_after_s: ``Retry-After`` seconds, when trying again later can work.
        challenge: The ``WWW-Authenticate`` value of a 401 or 403 (RFC 6750); a 401
            without one answers ``Bearer``.
    """

    def __init__(
        self,
        kind: ErrorKind,
        detail: str,
        *,
        retry_after_s: int | None = None,
        challenge: str | None = None,
    ):
        super().__init__(detail)
        self.kind = kind
        self.status = STATUS_BY_KIND[kind]
        self.detail = detail
        self.retry_after_s = retry_after_s
        self.challenge = challenge
