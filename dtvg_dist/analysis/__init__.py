"""Reading results back: the report library, figures, the paper's numbers and the
planner's memory/traffic arithmetic."""
