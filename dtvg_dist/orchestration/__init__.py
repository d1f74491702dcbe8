"""Orchestration: the two-stage pipeline, recipe resolution, reading finished
runs and cost counts; what the commands and the grid call, above training."""
