"""dtvg-dist: distributed Dynamic Task Vector Grouping soft-prompt tuning."""

__version__ = "0.1.0"
