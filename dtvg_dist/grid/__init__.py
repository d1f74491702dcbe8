"""Experiments as grids of jobs with dependencies, and the executors that
run them (serial, local, slurm). Below the commands, above orchestration:
a grid builds trainer command lines from recipes and never trains itself."""
