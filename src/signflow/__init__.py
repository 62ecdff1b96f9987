"""signflow: a reproducible transfer-learning pipeline for traffic-sign classification."""

__version__ = "0.1.0"
