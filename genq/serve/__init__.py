"""HTTP API and demo page over a genq index: ``create_app(searcher)`` and ``run_server(...)``."""

from genq.serve.app import create_app, run_server

__all__ = ["create_app", "run_server"]
