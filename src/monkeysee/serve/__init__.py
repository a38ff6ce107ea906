"""The web app: a page where a keeper drops a photo, and a JSON API, both answered by one trained run.

    from monkeysee.serve import ServeConfig, create_app
    app = create_app(ServeConfig(Path("runs/x")))     # any ASGI server; `monkeysee serve` uses uvicorn
"""

from monkeysee.serve.app import ServeConfig, create_app
from monkeysee.serve.service import PhotoRejected, PhotoService

__all__ = ["PhotoRejected", "PhotoService", "ServeConfig", "create_app"]
