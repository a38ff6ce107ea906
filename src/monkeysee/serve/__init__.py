"""The web app: a page where a keeper drops a photo, and a JSON API, both answered by one trained run.

    from monkeysee.serve import ServeConfig, create_app
    app = create_app(ServeConfig(Path("runs/x")))     # any ASGI server; `monkeysee serve` uses uvicorn

`ServeConfig` imports nothing heavy (the command line reads its fields for its options); the app and
the model service load on first use.
"""

from monkeysee.serve.config import ServeConfig

__all__ = ["PhotoRejected", "PhotoService", "ServeConfig", "create_app"]


def __getattr__(name: str) -> object:
    if name == "create_app":
        from monkeysee.serve.app import create_app

        return create_app
    if name in ("PhotoRejected", "PhotoService"):
        from monkeysee.serve import service

        return getattr(service, name)
    raise AttributeError(f"module 'monkeysee.serve' has no attribute {name!r}")
