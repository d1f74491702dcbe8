"""The package's exception types, in a leaf so any layer can raise them without
importing the layer that catches them."""

from __future__ import annotations


class RecipeError(ValueError):
    """A recipe or an override that does not fit the schema."""


# Exit codes every command uses: 0 done, 1 a check failed (data check), 2 a
# user-fixable error (bad recipe, missing file, unavailable backbone), 3 the
# training diverged, 75 (EX_TEMPFAIL) stopped on a signal after writing a
# checkpoint: requeue me, the rerun resumes.
EXIT_OK = 0
EXIT_USER_ERROR = 2
EXIT_DIVERGED = 3
EXIT_REQUEUE = 75
