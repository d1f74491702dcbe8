"""The model layer: backbone loading and the prompt methods that feed it."""
