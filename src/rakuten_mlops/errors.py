"""Domain errors. The CLI maps them to one clear line and an exit code; the API maps them to HTTP."""

from __future__ import annotations


class PlatformError(Exception):
    """Base of every error a user should see as a message, not a traceback."""

    exit_code = 1


class DataValidationError(PlatformError):
    """An input file is malformed; nothing was loaded. Names file, line and problem."""

    exit_code = 2

    def __init__(self, path: str, problem: str, line: int | None = None):
        self.path, self.problem, self.line = path, problem, line
        where = f"{path}, line {line}" if line is not None else path
        super().__init__(f"{where}: {problem}")


class NotEnoughDataError(PlatformError):
    """Too few rows (overall or per class) to train or evaluate."""

    exit_code = 2


class RegistryUnavailableError(PlatformError):
    """The MLflow tracking server / registry cannot be reached."""

    exit_code = 4


class ModelNotFoundError(PlatformError):
    """No such registered model, version or alias."""

    exit_code = 3


class PromotionRefused(PlatformError):
    """The promotion gate refused a version (also used for forbidden manual actions)."""

    exit_code = 3


class ObjectStoreNotFound(PlatformError):
    """The S3 bucket of a landing zone does not exist."""

    exit_code = 3


class ObjectStoreUnavailable(PlatformError):
    """The S3 endpoint cannot be reached or refuses the credentials."""

    exit_code = 6


class RetrainAlreadyRunning(PlatformError):
    """A retraining job started earlier is still running."""


class UnknownPredictionError(PlatformError):
    """Label feedback names predictions that are not in the prediction log; nothing was stored.

    ``detail`` lists every unknown one (``field`` like ``items[3].prediction_id``, ``message``)."""

    exit_code = 3

    def __init__(self, problems: list[dict[str, str]]):
        self.detail = problems
        self.field = problems[0]["field"]
        more = f" (and {len(problems) - 1} more unknown)" if len(problems) > 1 else ""
        super().__init__(f"{problems[0]['field']}: {problems[0]['message']}{more}; nothing was stored")
