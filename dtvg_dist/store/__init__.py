"""What runs leave on disk: run files, the TPV bank and checkpoints."""
