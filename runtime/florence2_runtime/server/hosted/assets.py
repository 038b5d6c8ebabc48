"""A local stand-in for NVCF's assets API, so clients of NVIDIA's hosted Florence-2 can send images by id.

The hosted flow: ``POST /v2/nvcf/assets`` with ``{"contentType", "description"}`` returns an ``assetId``
and a pre-signed ``uploadUrl``; the client ``PUT``s the bytes there (no API key: the URL is the
credential) and then names the image as ``<img src="data:image/jpeg;asset_id,ID" />``. Here the upload
URL points back at this server and carries a random token. Assets live in memory, bounded in count,
size and total bytes, and are deleted when they expire (a sweep runs in the background, and every
access purges too). Expired ids are remembered for a while so a late request hears "expired", not
"unknown".
"""

from __future__ import annotations

import hmac
import secrets
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field

from ..problems import RequestError, invalid
from ..settings import ServerLimits

_REMEMBERED_EXPIRED = 4096  # expired ids kept (ids only) to tell "expired" from "unknown"


@dataclass
class Asset:
    """One asset: its upload token, what the client said it is, and (once uploaded) its bytes."""

    asset_id: str
    token: str
    content_type: str
    description: str
    expires: float  # time.monotonic() deadline
    data: bytes | None = field(default=None, repr=False)


class AssetStore:
    """In-memory assets keyed by id. Used from the event loop only (no locking needed)."""

    def __init__(self, limits: ServerLimits | None = None, clock=time.monotonic):
        self.limits = (
            limits or ServerLimits()
        )  # max_assets, max_asset_bytes, max_assets_total_bytes, asset_ttl_s
        self._clock = clock
        self._assets: dict[str, Asset] = {}
        self._expired: OrderedDict[str, None] = OrderedDict()

    def __len__(self) -> int:
        self.purge()
        return len(self._assets)

    @property
    def total_bytes(self) -> int:
        return sum(len(a.data) for a in self._assets.values() if a.data is not None)

    def purge(self) -> int:
        """Delete every expired asset; returns how many were deleted."""
        now = self._clock()
        gone = [k for k, a in self._assets.items() if a.expires <= now]
        for key in gone:
            del self._assets[key]
            self._expired[key] = None
        while len(self._expired) > _REMEMBERED_EXPIRED:
            self._expired.popitem(last=False)
        return len(gone)

    def create(self, content_type: object, description: object) -> Asset:
        """A new, empty asset (422 for a content type that is not an image, 429 when the store is full)."""
        if not isinstance(content_type, str) or not content_type.lower().startswith("image/"):
            raise invalid(
                "unsupported_asset_type",
                f"contentType must be an image type such as 'image/jpeg', got {content_type!r}",
            )
        if description is not None and not isinstance(description, str):
            raise invalid(
                "invalid_request", f"description must be a string, got {type(description).__name__}"
            )
        self.purge()
        if len(self._assets) >= self.limits.max_assets:
            raise RequestError(
                429,
                "too_many_assets",
                f"this server holds {self.limits.max_assets} assets already; "
                f"they expire {self.limits.asset_ttl_s:g} s after creation",
                headers={"Retry-After": str(max(1, int(self._seconds_to_next_expiry())))},
            )
        asset = Asset(
            str(uuid.uuid4()),
            secrets.token_urlsafe(24),
            content_type,
            (description or "")[:1000],
            self._clock() + self.limits.asset_ttl_s,
        )
        self._assets[asset.asset_id] = asset
        return asset

    def check_token(self, asset_id: str, token: object) -> Asset:
        """The asset, if ``token`` is the one in its upload URL (401 otherwise; 404 / 410 for the id)."""
        asset = self._get(asset_id)
        if not isinstance(token, str) or not hmac.compare_digest(
            token.encode("utf-8", "surrogateescape"), asset.token.encode()
        ):
            raise RequestError(
                401,
                "unauthorized",
                f"wrong or missing upload token for asset {asset_id}; "
                "PUT to the uploadUrl returned when the asset was created",
            )
        return asset

    def upload(self, asset_id: str, token: object, data: bytes) -> Asset:
        """Store the bytes of an asset (checked with ``check_token`` first)."""
        asset = self.check_token(asset_id, token)
        if not data:
            raise invalid("empty_asset", f"the upload of asset {asset_id} is empty")
        room = self.limits.max_assets_total_bytes - self.total_bytes + (len(asset.data) if asset.data else 0)
        if len(data) > room:
            raise RequestError(
                507,
                "asset_storage_full",
                f"assets on this server already hold "
                f"{self.total_bytes} of {self.limits.max_assets_total_bytes} bytes",
                headers={"Retry-After": str(max(1, int(self._seconds_to_next_expiry())))},
            )
        asset.data = data
        return asset

    def delete(self, asset_id: str) -> None:
        self._get(asset_id)
        del self._assets[asset_id]

    def resolve(self, asset_id: str) -> bytes:
        """The bytes of an uploaded asset (404 unknown, 410 expired, 409 created but not uploaded)."""
        asset = self._get(asset_id)
        if asset.data is None:
            raise RequestError(
                409,
                "asset_not_uploaded",
                f"asset {asset_id} was created but nothing was uploaded; "
                "PUT the image to its uploadUrl first",
            )
        return asset.data

    def _get(self, asset_id: str) -> Asset:
        self.purge()
        asset = self._assets.get(asset_id)
        if asset is not None:
            return asset
        if asset_id in self._expired:
            raise RequestError(
                410,
                "asset_expired",
                f"asset {asset_id} has expired and was deleted "
                f"(assets live {self.limits.asset_ttl_s:g} s); upload it again",
            )
        raise RequestError(404, "unknown_asset", f"unknown asset id {asset_id!r}")

    def _seconds_to_next_expiry(self) -> float:
        now = self._clock()
        return min((a.expires - now for a in self._assets.values()), default=1.0)


def sweep_interval(limits: ServerLimits) -> float:
    """How often the background sweep runs: often enough that an asset outlives its ttl by at most ~25 %."""
    return min(60.0, max(0.05, limits.asset_ttl_s / 4))
