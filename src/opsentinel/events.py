"""Event models of the 1Password Events API (V2, tolerant of V1), shared by the connector and the simulator.

Only data lives here: field names, enumerations and pydantic models. The simulator uses them to know
what to generate; the connector uses them to validate what it receives. Neither side's logic lives here.

Source: ../shared/reference/onepassword-events-api.md sections 5-8 and the reconstructed V2 OpenAPI file.
Enumerations are open in practice (the API may add values), so models accept any string.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

from pydantic import BaseModel, ConfigDict

from opsentinel.streams import FEATURES as _FEATURES

SIGNIN_CATEGORIES: Final = (
    "success",
    "credentials_failed",
    "mfa_failed",
    "sso_failed",
    "modern_version_failed",
    "firewall_failed",
    "firewall_reported_success",
)

SIGNIN_TYPES: Final = tuple(
    """
    all_blocked anonymous_blocked code_bad code_disabled code_timeout continent_blocked country_blocked
    credentials_ok duo_bad duo_disabled duo_native_bad duo_timeout federated ip_blocked mfa_missing mfa_ok
    modern_version_missing modern_version_old non_sso_user password_secret_bad platform_secret_bad
    platform_secret_disabled platform_secret_proxy service_account_sso_denied sso_user_mismatch totp_bad
    totp_disabled totp_timeout u2f_bad u2f_disabled u2f_timeout
    """.split()
)
# V1 only (the 1.0.0/1.2.0 YAML typo); clients must accept it.
SIGNIN_TYPES_V1_ONLY: Final = ("u2f_timout",)
SIGNIN_TYPES_V2_ONLY: Final = ("federated",)

# Which sign-in types go with which category, for realistic data (reference section 8.1).
SIGNIN_CATEGORY_TYPES: Final[dict[str, tuple[str, ...]]] = {
    "success": ("credentials_ok", "mfa_ok", "federated"),
    "credentials_failed": ("password_secret_bad",),
    "mfa_failed": (
        "mfa_missing",
        "totp_bad",
        "totp_disabled",
        "totp_timeout",
        "u2f_bad",
        "u2f_disabled",
        "u2f_timeout",
        "duo_bad",
        "duo_disabled",
        "duo_native_bad",
        "duo_timeout",
        "code_bad",
        "code_disabled",
        "code_timeout",
        "platform_secret_bad",
        "platform_secret_disabled",
        "platform_secret_proxy",
    ),
    "sso_failed": ("service_account_sso_denied", "non_sso_user", "sso_user_mismatch"),
    "modern_version_failed": ("modern_version_missing", "modern_version_old"),
    "firewall_failed": (
        "ip_blocked",
        "continent_blocked",
        "country_blocked",
        "anonymous_blocked",
        "all_blocked",
    ),
    "firewall_reported_success": (
        "ip_blocked",
        "continent_blocked",
        "country_blocked",
        "anonymous_blocked",
        "all_blocked",
    ),
}

ITEM_USAGE_ACTIONS: Final = (
    "fill",
    "select-sso-provider",
    "enter-item-edit-mode",
    "export",
    "share",
    "secure-copy",
    "reveal",
    "server-create",
    "server-update",
    "server-fetch",
    "other",
)
ITEM_USAGE_ACTIONS_V2_ONLY: Final = ("other",)

AUDIT_ACTIONS: Final = tuple(
    """
    activate addgsso begin beginr cancel cancelr changeks changela changemp changenm changesk chngasso
    chngdsso chngpsso complete completr convert create dealldev delete delgsso delshare deolddev detchild
    disblduo disblmfa disblsso dlgsess dvrfydmn enblduo enblmfa enblsso expire export grant hide join
    launchi leave musercom muserdec patch propose provsn prsndall purge rdmchild reactive reauth replace
    resendts revoke role sdvcsso sendpkg sendts share ssotknv suspend tdvcsso trename trevoke trvlaway
    trvlback tverify uisas unhide unknown unlink updatduo update updatea updatfw updatmfa upguest uvrfydmn
    verify view vrfydmn
    """.split()
)
AUDIT_ACTIONS_V2_ONLY: Final = ("expire", "launchi", "unlink")

AUDIT_OBJECT_TYPES: Final = tuple(
    """
    account card cred device dlgdsess ec famchild file gm group gva invite item itemhist items miguser
    mngdacc pm report sa satoken slackapp sso ssotkn sub template user uva vault vaultkey
    """.split()
)
AUDIT_OBJECT_TYPES_V2_ONLY: Final = ("cred", "mngdacc")

USER_TYPES: Final = ("user", "external_user")
FEATURES: Final = _FEATURES

# Fields V2 adds over V1; the V1 endpoints omit them.
V2_ONLY_FIELDS: Final[dict[str, tuple[str, ...]]] = {
    "auditevents": ("actor_type", "actor_account_uuid", "account_uuid"),
    "signinattempts": ("account_uuid",),
    "itemusages": ("account_uuid",),
}
V2_ONLY_USER_FIELDS: Final = ("user_type", "user_account_uuid")


class _Open(BaseModel):
    """Base: unknown fields are kept, never an error (the API grows)."""

    model_config = ConfigDict(extra="allow", frozen=True)


class User(_Open):
    uuid: str | None = None
    name: str | None = None
    email: str | None = None
    user_type: str | None = None
    user_account_uuid: str | None = None


class Client(_Open):
    app_name: str | None = None
    app_version: str | None = None
    platform_name: str | None = None
    platform_version: str | None = None
    os_name: str | None = None
    os_version: str | None = None
    ip_address: str | None = None


class Location(_Open):
    country: str | None = None
    region: str | None = None
    city: str | None = None
    latitude: float | None = None
    longitude: float | None = None


class Session(_Open):
    uuid: str | None = None
    login_time: datetime | None = None
    device_uuid: str | None = None
    ip: str | None = None


class Details(_Open):
    value: str | None = None


class _Event(_Open):
    uuid: str
    timestamp: datetime


class AuditEvent(_Event):
    actor_uuid: str | None = None
    actor_details: User | None = None
    actor_type: str | None = None
    actor_account_uuid: str | None = None
    account_uuid: str | None = None
    action: str | None = None
    object_type: str | None = None
    object_uuid: str | None = None
    object_details: User | None = None
    aux_id: int | None = None
    aux_uuid: str | None = None
    aux_details: User | None = None
    aux_info: str | None = None
    session: Session | None = None
    location: Location | None = None


class SignInAttempt(_Event):
    session_uuid: str | None = None
    category: str | None = None
    type: str | None = None
    country: str | None = None
    details: Details | None = None
    target_user: User | None = None
    client: Client | None = None
    location: Location | None = None
    account_uuid: str | None = None


class ItemUsage(_Event):
    used_version: int | None = None
    vault_uuid: str | None = None
    item_uuid: str | None = None
    action: str | None = None
    user: User | None = None
    client: Client | None = None
    location: Location | None = None
    account_uuid: str | None = None


EVENT_MODELS: Final[dict[str, type[_Event]]] = {
    "auditevents": AuditEvent,
    "signinattempts": SignInAttempt,
    "itemusages": ItemUsage,
}


class Introspection(_Open):
    """V2 introspect body (`GET /api/v2/auth/introspect`)."""

    uuid: str
    issued_at: datetime | None = None
    features: list[str]
    account_uuid: str | None = None


class EventPage(_Open):
    """A 200 body of an event endpoint."""

    cursor: str
    has_more: bool
    items: list[dict[str, Any]]
