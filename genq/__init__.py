"""genq: adapt a dense retriever to an unlabelled corpus with synthetic queries (GenQ)."""

__version__ = "0.1.0"
