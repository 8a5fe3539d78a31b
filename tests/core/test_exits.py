"""One mapping from errors to exit codes, shared by every command."""

from __future__ import annotations

import pytest
import typer
from pydantic import BaseModel, ValidationError

from cli.errors import exit_on_error
from core.errors import (
    BlockedError,
    ConfigurationError,
    InputError,
    ModelNotFoundError,
    OfflineSourceError,
    OnlineStoreFullError,
    OnlineStoreUnavailable,
    StaleDataError,
    TableReadError,
    UnavailableError,
)
from core.exits import ExitCode, exit_code_for

pytestmark = pytest.mark.unit  # in-process only: `make test-unit`


class _Positive(BaseModel):
    value: int


def _validation_error() -> ValidationError:
    try:
        _Positive(value="not a number")  # type: ignore[arg-type]
    except ValidationError as error:
        return error
    raise AssertionError("expected a validation error")


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (InputError("x"), ExitCode.BAD_INPUT),
        (ConfigurationError("unset ${CHURN_REDIS_URL}"), ExitCode.BAD_INPUT),
        (TableReadError("no labels"), ExitCode.BAD_INPUT),
        (ModelNotFoundError("no version"), ExitCode.BAD_INPUT),
        (_validation_error(), ExitCode.BAD_INPUT),
        (UnavailableError("x"), ExitCode.FAILURE),
        (OnlineStoreUnavailable("redis down"), ExitCode.FAILURE),
        (OfflineSourceError("offline store"), ExitCode.FAILURE),
        (OSError("disk"), ExitCode.FAILURE),
        (BlockedError("x"), ExitCode.BLOCKED),
        (OnlineStoreFullError("maxmemory"), ExitCode.BLOCKED),
        (StaleDataError("x"), ExitCode.STALE_DATA),
    ],
)
def test_each_error_maps_to_one_exit_code(error: BaseException, code: ExitCode) -> None:
    assert exit_code_for(error) == code


def test_exit_on_error_prints_the_message_and_exits_with_the_code(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(typer.Exit) as stopped, exit_on_error():
        raise TableReadError("labels table x does not exist")

    assert stopped.value.exit_code == ExitCode.BAD_INPUT
    assert capsys.readouterr().err == "error: labels table x does not exist\n"


def test_an_unexpected_error_is_printed_with_its_type(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(typer.Exit) as stopped, exit_on_error():
        raise KeyError("port")

    assert stopped.value.exit_code == ExitCode.FAILURE
    assert capsys.readouterr().err == "error: KeyError: 'port'\n"


def test_an_exit_raised_inside_passes_through() -> None:
    with pytest.raises(typer.Exit) as stopped, exit_on_error():
        raise typer.Exit(ExitCode.FINDING)

    assert stopped.value.exit_code == ExitCode.FINDING
