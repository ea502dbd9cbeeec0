"""``ssl-emp benchmark``: the grid of runs (``grid``), running and resuming them (``sweep``), their
result rows (``results``), and the report with its statistics, plots and protocol check."""
