"""Plain-Python backup core. Never imports dagster (a test enforces it)."""
