"""zerodown: zero-downtime CI/CD for small teams."""

__version__ = "0.1.0"
