"""Reporting: reads finished runs and the paper's numbers into tables and
figures (the report library, figures, the demo table); used by the commands
and the grid."""
