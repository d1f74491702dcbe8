"""The training layer: the trainer loop, evaluation, distributed setup and tracking."""
