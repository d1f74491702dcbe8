"""The package's exception types, in a leaf so any layer can raise them without
importing the layer that catches them."""

from __future__ import annotations


class RecipeError(ValueError):
    """A recipe or an override that does not fit the schema."""
