"""The package's exception types, in a leaf so any layer can raise them without
importing the layer that catches them.

Every mistake a user can fix (a bad recipe or command line, a missing or bad
file, a backbone that is not on this machine, a bank or run folder that does
not fit) derives from `UserError`: the commands end such a failure with one
line and exit 2 (`dtvg_dist.cli`). The subclasses keep `ValueError` as a base
so code that caught them as `ValueError` still does."""

from __future__ import annotations


class UserError(Exception):
    """A failure the user can fix; the message names the key, file or value."""


class RecipeError(UserError, ValueError):
    """A recipe or an override that does not fit the schema."""


class DataError(UserError, ValueError):
    """A dataset could not be loaded or a row is invalid; the message says where."""


class BackboneUnavailable(UserError, ValueError):
    """A backbone hub id whose files are not on this machine and cannot be
    fetched (not in the hub cache, and the hub offline or unreachable)."""


class BankError(UserError, ValueError):
    """A TPV bank entry that is missing, corrupt or disagrees with the run."""


class UsageError(UserError, ValueError):
    """A bad command line; the message says what to give instead."""


class RunLocked(UserError, RuntimeError):
    """Another live process holds a run folder's or bank entry's lock."""


class CheckpointError(UserError, ValueError):
    """No usable checkpoint to resume from; the message says what to delete."""


class Preempted(RuntimeError):
    """Training stopped on a signal after writing a checkpoint (exit 75: requeue)."""


class TrainingDiverged(RuntimeError):
    """The loss became NaN or inf (not a user error: exit 3)."""


# Exit codes every command uses: 0 done, 1 a check failed (data check), 2 a
# user-fixable error (bad recipe, missing file, unavailable backbone), 3 the
# training diverged, 75 (EX_TEMPFAIL) stopped on a signal after writing a
# checkpoint: requeue me, the rerun resumes.
EXIT_OK = 0
EXIT_USER_ERROR = 2
EXIT_DIVERGED = 3
EXIT_REQUEUE = 75
