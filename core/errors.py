"""Every error of the platform, in one hierarchy, mapped once to exit codes and HTTP statuses.

The four families say who has to act, and so how a command ends (:mod:`core.exits`) and what a
route answers (:func:`http_status_for`):

- :class:`InputError`: what the user gave is unusable (arguments, files, profile, registry
  state). Exit 2; HTTP 422 (404 for :class:`NotFoundError`).
- :class:`UnavailableError`: a store, a service or a file failed. Exit 1; HTTP 503.
- :class:`BlockedError`: the work ran and was refused (quality gate, a full store). Exit 3;
  HTTP 409.
- :class:`StaleDataError`: the data needed has not arrived yet. Exit 5; HTTP 503.

A stage raises these classes (or the specific ones below); it defines none of its own. The
specific classes exist where callers catch them, or where the message alone would not say
which rule refused.
"""

from __future__ import annotations

from collections.abc import Sequence


class ChurnError(Exception):
    """Base of every error this platform raises on purpose (its message is for the user)."""


# --- the four families ------------------------------------------------------------------


class InputError(ChurnError, ValueError):
    """What the user gave is unusable: arguments, input files, profile or registry state."""


class MalformedEvent(InputError):
    """A streamed activity event that cannot be read (it goes to the dead-letter stream)."""


class NotFoundError(InputError):
    """What was asked for does not exist: a model, a version, an alias, a user."""


class UnavailableError(ChurnError, RuntimeError):
    """A store, a service or a file failed; trying again later may work."""


class BlockedError(ChurnError, RuntimeError):
    """The work ran and was refused: a model below the quality gate, a full online store."""


class StaleDataError(ChurnError, RuntimeError):
    """The data a command needs has not arrived yet (nothing was done)."""


# --- configuration and contracts between stages -------------------------------------------


class ConfigurationError(InputError):
    """A profile or setting cannot be used as configured (missing file, unset variable)."""


class TableReadError(InputError):
    """An offline table is missing, unreadable, or lacks the columns its contract names."""


class LineageError(InputError):
    """Registry tags lack a lineage field or hold a value that cannot be parsed."""


class FeatureServiceError(InputError):
    """A feature service is unknown or cannot be resolved as the stage needs it."""


# --- trust: the two checkpoints -------------------------------------------------------------


class ModelRefused(InputError):
    """A registered version cannot be used: its tags, columns or classes are wrong."""


class UntrustedModelError(ModelRefused):
    """A model artifact is refused: wrong flavour or format, unknown types, changed files."""


class OnDemandSourceMismatch(InputError):
    """A registered on-demand view's code differs from the repo's (or is not in it)."""


class RegistryError(InputError):
    """A registry operation cannot be done as asked (unknown model or version, no history)."""


class ModelNotFoundError(RegistryError, NotFoundError):
    """No such registered model, version or alias."""


class ChampionChanged(RegistryError):
    """The champion moved between the decision and the alias change (compare-and-set)."""


class ModelUnsupported(InputError):
    """The model is not a tree ensemble a fast path (flat forest, explainer) reproduces."""


# --- stores and files -----------------------------------------------------------------------


class OnlineStoreUnavailable(UnavailableError):
    """The online store did not answer in time, refused the connection or is not set up.

    The message is safe to show callers (it names no host or path); the underlying error is
    the ``__cause__``.
    """


class OnlineStoreFullError(BlockedError):
    """The online store refused a write for lack of memory (Redis ``maxmemory``)."""


class OfflineSourceError(UnavailableError):
    """An offline source could not be read."""


class LockTimeout(UnavailableError, TimeoutError):
    """A lock was not acquired within the allowed time."""


class UnreadableInputError(UnavailableError):
    """An input file is missing, of an unsupported format, or not readable."""


class SchemaError(InputError):
    """Required columns are missing or have the wrong type (each problem is listed).

    Args:
        problems: One description per missing or mistyped column.
        subject: What has the schema (``raw events``), named at the start of the message.
    """

    def __init__(self, problems: Sequence[str], *, subject: str | None = None) -> None:
        self.problems = list(problems)
        listed = "; ".join(self.problems)
        super().__init__(f"{subject} schema: {listed}" if subject else listed)


# --- the one mapping to HTTP statuses -------------------------------------------------------

# Most specific first: the first family an error belongs to decides.
_HTTP_STATUSES: tuple[tuple[type[BaseException], int], ...] = (
    (NotFoundError, 404),
    (InputError, 422),
    (BlockedError, 409),
    (StaleDataError, 503),
    (UnavailableError, 503),
)


def http_status_for(error: BaseException) -> int:
    """The HTTP status a route answers when ``error`` escapes it (500 for anything else)."""
    for family, status in _HTTP_STATUSES:
        if isinstance(error, family):
            return status
    return 500
