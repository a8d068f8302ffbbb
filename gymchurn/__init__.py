"""gymchurn: monthly churn scores and client segments for a chain of fitness clubs."""

__version__ = "0.1.0"
