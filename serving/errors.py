"""The errors of the prediction API: one kind per problem, one table of their statuses.

Every error body is ``{"kind": ..., "detail": ...}``. The service and the routes name a
kind; its HTTP status is in :data:`STATUS_BY_KIND` alone. A kind that reports an error of
the platform's own hierarchy answers that error's family status
(:func:`core.errors.http_status_for`), so that number is written once too.
"""

from __future__ import annotations

from typing import Literal, get_args, overload

from core.errors import OnlineStoreUnavailable, http_status_for
from serving.features import ProblemKind

ErrorKind = (
    ProblemKind
    | Literal[
        "store_unavailable",
        "no_model",
        "batch_too_large",
        "payload_too_large",
        "invalid_request",
        "unauthorized",
        "overloaded",
        "deadline_exceeded",
        "internal_error",
    ]
)

# The one table of this API's error statuses, by kind.
STATUS_BY_KIND: dict[str, int] = {
    # a row problem: unknown user, stale or missing features, nothing to predict from
    **dict.fromkeys(get_args(ProblemKind), 404),
    "unauthorized": 401,
    "batch_too_large": 413,
    "payload_too_large": 413,
    "invalid_request": 422,
    "internal_error": 500,
    "no_model": 503,
    "overloaded": 503,
    "deadline_exceeded": 503,
    "store_unavailable": http_status_for(OnlineStoreUnavailable()),
}


class ServingError(Exception):
    """A request that cannot be answered with a prediction; its kind decides its status.

    ``detail`` is shown to the caller: it names the problem, never internal text (hosts,
    paths, exception messages), which goes to the log instead.

    Args:
        kind: What went wrong (the error body's ``kind``); the status is
            ``STATUS_BY_KIND[kind]``.
        detail: The message for the caller.
        retry_after_s: ``Retry-After`` seconds, when trying again later can work.
    """

    @overload
    def __init__(
        self, kind: ErrorKind, detail: str, /, *, retry_after_s: int | None = None
    ) -> None: ...

    @overload
    def __init__(
        self, kind: ErrorKind, status: int, detail: str, /, *, retry_after_s: int | None = None
    ) -> None: ...

    def __init__(self, kind: ErrorKind, *given: int | str, retry_after_s: int | None = None):
        # The form with a status, ``(kind, status, detail)``, is still accepted from callers
        # written before the table (serving/routes.py), if the status is the table's.
        *status, detail = given
        self.status = STATUS_BY_KIND[kind]
        if status != [] and status != [self.status]:
            raise ValueError(f"error kind {kind!r} answers {self.status}, not {status[0]}")
        super().__init__(str(detail))
        self.kind = kind
        self.detail = str(detail)
        self.retry_after_s = retry_after_s
