"""Who may use the keeper's log through the server, and the log's store, opened on first use.

A request names its keeper with `Authorization: Bearer TOKEN`, TOKEN being one printed by
`monkeysee log keeper add`. Without a keeper's token:
- on a server without an access token, a request from this computer (loopback) acts as the *local keeper*:
  it may save and read sightings (recorded by nobody in particular) but not confirm or correct them,
  because every review records who made it;
- the server's own access token (--token / MONKEYSEE_TOKEN) also acts as the local keeper;
- anything else is refused (401).
The store is opened (created or upgraded) on the first request that needs it; while the database cannot
be reached, every log request answers 503 saying why, and the model's answers are served as before.
"""

from __future__ import annotations

import hmac
import ipaddress
import threading
from dataclasses import dataclass

import anyio
from fastapi import Request

from monkeysee.serve.config import ServeConfig
from monkeysee.sightings import AccessError, KeeperView, PlaceView, SightingError, Store, StoreUnavailable

FIX_TOKEN = "send 'Authorization: Bearer TOKEN' with a keeper's token (`monkeysee log keeper add NAME`)"
FIX_REVIEWER = ("send a reviewer's token (`monkeysee log keeper add NAME --reviewer` prints one): every "
                "review records who made it")


class Refused(Exception):
    """A log request refused before it reaches the store: status, code, what and the fix."""

    def __init__(self, status: int, code: str, detail: str, fix: str) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail, self.fix = status, code, detail, fix


@dataclass(frozen=True)
class Caller:
    """The keeper behind a request; `keeper` is None for the local keeper."""

    keeper: KeeperView | None

    @property
    def name(self) -> str | None:
        return None if self.keeper is None else self.keeper.name

    def reviewer(self) -> KeeperView:
        """The keeper, when they may confirm and correct; else Refused (403)."""
        if self.keeper is None:
            raise Refused(403, "forbidden", "the local keeper (no keeper's token) records sightings but does "
                          "not review them", FIX_REVIEWER)
        if not self.keeper.reviewer:
            raise Refused(403, "forbidden", f"{self.keeper.name} is a keeper, not a reviewer: only reviewers "
                          "confirm or correct", "ask a reviewer, or add one with `monkeysee log keeper add "
                          "NAME --reviewer`")
        return self.keeper


LOCAL = Caller(None)


class LogStore:
    """The server's one `Store`, opened on first use and shared by every request thread."""

    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        self._store: Store | None = None
        self._lock = threading.Lock()

    def get(self) -> Store:
        """The store (opening it now if needed); StoreUnavailable when it cannot be opened."""
        with self._lock:
            if self._store is None:
                try:
                    c = self.config
                    store = Store.open(c.db, photos=c.photos, default=c.log_default)
                    store.add_places(PlaceView(p) for p in self.config.places)
                except StoreUnavailable:
                    raise
                except SightingError as e:  # a bad --db or photo folder: the server's set-up, not the request
                    raise StoreUnavailable(f"the log cannot be opened: {e.problem}", fix=e.fix,
                                           path=e.path) from None
                self._store = store
            return self._store

    async def aget(self) -> Store:
        return await anyio.to_thread.run_sync(self.get)

    def close(self) -> None:
        with self._lock:
            if self._store is not None:
                self._store.close()
                self._store = None


def bearer(request: Request) -> str | None:
    scheme, _, credential = request.headers.get("authorization", "").partition(" ")
    return credential.strip() or None if scheme.lower() == "bearer" else None


def is_loopback(host: str | None) -> bool:
    if host == "localhost":
        return True
    try:
        return host is not None and ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


async def identify(request: Request, log: LogStore) -> Caller:
    """The caller of a log request (see the module doc), or Refused (401)."""
    token = bearer(request)
    server_token = log.config.token
    if token is None:
        if server_token is None and is_loopback(request.client.host if request.client else None):
            return LOCAL
        raise Refused(401, "unauthorized", "the keeper's log needs a keeper's token from beyond this "
                      "computer", FIX_TOKEN)
    if server_token is not None and hmac.compare_digest(token.encode(), server_token.encode()):
        return LOCAL
    store = await log.aget()
    try:
        return Caller(await anyio.to_thread.run_sync(store.keeper, token))
    except AccessError:
        raise Refused(401, "unauthorized", "this token belongs to no keeper", FIX_TOKEN) from None


async def known_token(log: LogStore, token: str) -> bool:
    """Whether `token` is a keeper's (for the server's access-token guard); False when the log is down."""
    try:
        store = await log.aget()
        await anyio.to_thread.run_sync(store.keeper, token)
    except SightingError:
        return False
    return True
