"""pushgate: a test harness and push gate for git trees."""

__version__ = "0.1.0"
