"""Deterministic event content: event `seq` of a stream is a pure function of (seed, stream, seq, time).

Nothing is stored: the store asks for events by index when it serves a page, so a log of millions of
events costs no memory. Values follow reference/onepassword-events-api.md sections 5-10: uuid shapes,
per-stream timestamp precision, category/type pairings, action/object combinations with the right
`aux_*` fields, `details: null`, `location` sometimes absent, MSP fields on a minority.

V1 serialisation is the V2 event without the V2-only fields, with V2-only enum values mapped to their
nearest V1 value (`federated` -> `credentials_ok`, item action `other` -> no `action`, audit actions
`expire`/`launchi`/`unlink` -> `unknown`, object types `cred` -> `item`, `mngdacc` -> `account`) and the
V1 spelling `u2f_timout` of the 1.0.0/1.2.0 spec.
"""

from __future__ import annotations

from typing import Any, Final

from opsentinel.events import ITEM_USAGE_ACTIONS, SIGNIN_CATEGORY_TYPES
from opsentinel.simulator.entropy import Draw, Weighted, base32_uuid, key_int
from opsentinel.simulator.pool import PLACES, Person, Pool
from opsentinel.simulator.rfc3339 import NS, format_millis, format_nanos, format_seconds

# Timestamp quantum per stream, in nanoseconds: the store rounds times down to it so that what is
# served and what is compared against start_time/end_time are the same instant.
QUANTUM: Final[dict[str, int]] = {"auditevents": 1, "signinattempts": NS, "itemusages": 1_000_000}
_FORMAT = {"auditevents": format_nanos, "signinattempts": format_seconds, "itemusages": format_millis}

# (action, object_type, shape, weight). The shape says which object/aux fields the event carries.
AUDIT_COMBOS: Final[tuple[tuple[str, str, str, int], ...]] = (
    # a user acted on another user
    ("activate", "user", "user", 6), ("suspend", "user", "user", 5), ("reactive", "user", "user", 3),
    ("delete", "user", "user", 3), ("create", "user", "user", 4), ("update", "user", "user", 3),
    ("role", "user", "user", 2), ("provsn", "user", "user", 4), ("beginr", "user", "user", 2),
    ("completr", "user", "user", 2), ("cancelr", "user", "user", 1), ("dealldev", "user", "user", 1),
    ("upguest", "user", "user", 1), ("sendpkg", "user", "user", 1), ("uisas", "user", "user", 1),
    # a user acted on themself
    ("changemp", "user", "self", 3), ("changesk", "user", "self", 2), ("changenm", "user", "self", 2),
    ("changeks", "user", "self", 1), ("changela", "user", "self", 1), ("enblmfa", "user", "self", 3),
    ("disblmfa", "user", "self", 2), ("updatmfa", "user", "self", 2), ("trvlaway", "user", "self", 2),
    ("trvlback", "user", "self", 2), ("reauth", "user", "self", 2), ("verify", "user", "self", 2),
    ("unknown", "user", "self", 1),
    # account-wide settings
    ("activate", "account", "account", 1), ("updatfw", "account", "account", 2),
    ("disblmfa", "account", "account", 1), ("enblmfa", "account", "account", 1),
    ("update", "account", "account", 2), ("updatea", "account", "account", 1),
    ("convert", "account", "account", 1), ("changenm", "account", "account", 1),
    ("deolddev", "account", "account", 1), ("enblduo", "account", "account", 1),
    ("disblduo", "account", "account", 1), ("updatduo", "account", "account", 1),
    ("prsndall", "account", "account", 1), ("vrfydmn", "account", "account", 1),
    ("uvrfydmn", "account", "account", 1), ("dvrfydmn", "account", "account", 1),
    ("propose", "account", "account", 1), ("unknown", "account", "account", 1),
    # vaults and access
    ("create", "vault", "vault", 4), ("delete", "vault", "vault", 2), ("update", "vault", "vault", 3),
    ("export", "vault", "vault", 2), ("patch", "vault", "vault", 2), ("purge", "vault", "vault", 1),
    ("grant", "uva", "uva", 8), ("revoke", "uva", "uva", 5), ("update", "uva", "uva", 4),
    ("grant", "gva", "gva", 4), ("revoke", "gva", "gva", 3), ("update", "gva", "gva", 2),
    ("replace", "vaultkey", "vault", 1), ("create", "vaultkey", "vault", 1),
    # groups
    ("join", "gm", "gm", 8), ("leave", "gm", "gm", 5), ("role", "gm", "gm", 3),
    ("create", "group", "group", 2), ("delete", "group", "group", 1), ("update", "group", "group", 2),
    # devices
    ("create", "device", "device", 6), ("delete", "device", "device", 2), ("update", "device", "device", 2),
    ("sdvcsso", "device", "device", 1), ("tdvcsso", "device", "device", 1), ("reauth", "device", "device", 1),
    # invitations
    ("create", "invite", "invite", 4), ("delete", "invite", "invite", 1), ("sendts", "invite", "invite", 1),
    ("resendts", "invite", "invite", 1), ("expire", "invite", "invite", 1),
    # items
    ("share", "item", "item", 3), ("delshare", "item", "item", 2), ("hide", "item", "item", 1),
    ("unhide", "item", "item", 1), ("delete", "item", "item", 2), ("purge", "item", "item", 1),
    ("delete", "items", "vault", 1), ("export", "items", "vault", 1),
    ("purge", "itemhist", "item", 1), ("view", "itemhist", "item", 1),
    # service accounts and their tokens
    ("create", "sa", "sa", 1), ("delete", "sa", "sa", 1), ("update", "sa", "sa", 1),
    ("create", "satoken", "satoken", 2), ("trename", "satoken", "satoken", 1),
    ("tverify", "satoken", "satoken", 2), ("trevoke", "satoken", "satoken", 1),
    ("expire", "satoken", "satoken", 1),
    # single sign-on
    ("enblsso", "sso", "sso", 1), ("disblsso", "sso", "sso", 1), ("chngpsso", "sso", "sso", 1),
    ("chngasso", "sso", "sso", 1), ("chngdsso", "sso", "sso", 1), ("addgsso", "sso", "sso_group", 1),
    ("delgsso", "sso", "sso_group", 1), ("ssotknv", "ssotkn", "other", 2),
    # billing, family, reports, integrations, migrations
    ("begin", "ec", "self_other", 1), ("complete", "ec", "self_other", 1), ("cancel", "ec", "self_other", 1),
    ("create", "pm", "other", 1), ("update", "pm", "other", 1), ("delete", "pm", "other", 1),
    ("update", "card", "other", 1), ("delete", "card", "other", 1),
    ("update", "sub", "other", 1), ("cancel", "sub", "other", 1), ("reactive", "sub", "other", 1),
    ("rdmchild", "famchild", "other", 1), ("detchild", "famchild", "other", 1),
    ("dlgsess", "dlgdsess", "other", 2), ("create", "file", "other_lower", 1),
    ("delete", "file", "other_lower", 1), ("view", "report", "other", 2), ("export", "report", "other", 1),
    ("create", "report", "other", 1), ("create", "slackapp", "other", 1), ("delete", "slackapp", "other", 1),
    ("create", "template", "other_lower", 1), ("update", "template", "other_lower", 1),
    ("delete", "template", "other_lower", 1), ("musercom", "miguser", "user", 1),
    ("muserdec", "miguser", "user", 1), ("create", "cred", "other_lower", 2),
    ("delete", "cred", "other_lower", 1),
    ("launchi", "mngdacc", "msp", 1), ("unlink", "mngdacc", "msp", 1), ("create", "mngdacc", "msp", 1),
)  # fmt: skip

_AUDIT = Weighted([((a, o, s), w) for a, o, s, w in AUDIT_COMBOS])
_SIGNIN_CATEGORY = Weighted(
    [
        ("success", 750),
        ("credentials_failed", 80),
        ("mfa_failed", 70),
        ("sso_failed", 30),
        ("modern_version_failed", 20),
        ("firewall_failed", 30),
        ("firewall_reported_success", 20),
    ]
)
_SUCCESS_TYPE = Weighted([("credentials_ok", 50), ("mfa_ok", 35), ("federated", 15)])
_ITEM_ACTION = Weighted(
    list(
        zip(
            ITEM_USAGE_ACTIONS,
            # fill, select-sso-provider, enter-item-edit-mode, export, share, secure-copy, reveal,
            # server-create, server-update, server-fetch, other
            (35, 4, 8, 1, 2, 15, 15, 3, 3, 10, 2),
            strict=True,
        )
    )
)

V1_AUDIT_ACTION: Final = {"expire": "unknown", "launchi": "unknown", "unlink": "unknown"}
V1_OBJECT_TYPE: Final = {"cred": "item", "mngdacc": "account"}
V1_SIGNIN_TYPE: Final = {"federated": "credentials_ok", "u2f_timeout": "u2f_timout"}

_SESSION_BLOCK = 8 * 3600 * NS  # a device's session lasts a working day


class EventFactory:
    """Builds events of one account from its `Pool`; pure and thread-safe."""

    def __init__(self, seed: int, pool: Pool) -> None:
        self.seed = seed
        self.pool = pool
        self._prefix = {s: f"{seed}:{s}:".encode() for s in QUANTUM}
        self._sessions: dict[tuple[int, int, int], dict[str, Any]] = {}

    def build(self, stream: str, seq: int, ts_ns: int, *, v1: bool = False) -> dict[str, Any]:
        """Event `seq` of `stream`, stamped `ts_ns`, in V2 (default) or V1 form."""
        draw = Draw(self._prefix[stream] + str(seq).encode())
        if stream == "auditevents":
            return self._audit(draw, ts_ns, v1)
        if stream == "signinattempts":
            return self._signin(draw, ts_ns, v1)
        return self._itemusage(draw, ts_ns, v1)

    # -- helpers --------------------------------------------------------------------------------------

    def _location(self, draw: Draw, place: int, percent: float) -> dict[str, Any] | None:
        return self.pool.locations[place] if draw.chance(percent) else None

    def _device(self, draw: Draw, person: int) -> int:
        return draw.pick(self.pool.devices_by_owner[person])

    def _session(self, person: int, device: int, ts_ns: int) -> dict[str, Any]:
        # A device's sessions start at a fixed offset into each block, so login_time <= the event and
        # every event of one session shares one (cached) session object.
        dev = self.pool.devices[device]
        offset = (dev.number % 3600) * NS
        block = (ts_ns - offset) // _SESSION_BLOCK
        key = (person, device, block)
        session = self._sessions.get(key)
        if session is None:
            if len(self._sessions) > 50_000:
                self._sessions.clear()
            session = {
                "uuid": base32_uuid(key_int(self.seed, "session", person, device, block, size=17)),
                "login_time": format_seconds(block * _SESSION_BLOCK + offset),
                "device_uuid": dev.uuid,
                "ip": dev.ip,
            }
            self._sessions[key] = session
        return session

    # -- audit events ---------------------------------------------------------------------------------

    def _audit(self, draw: Draw, ts_ns: int, v1: bool) -> dict[str, Any]:
        pool = self.pool
        people = pool.people
        uuid = draw.uuid()
        action, object_type, shape = _AUDIT.pick(draw)
        if shape in ("self", "self_other"):
            actor = draw.pick(pool.staff)
        elif shape == "msp":
            actor = draw.pick(pool.externals)
        else:
            r = draw.below(100)
            if r < 6:
                actor = draw.pick(pool.externals)
            elif r < 14 and shape == "user":
                actor = pool.services[0]  # the SCIM bridge provisions users
            elif r < 70:
                actor = draw.pick(pool.admins)
            else:
                actor = draw.pick(pool.staff)
        who = people[actor]
        device = self._device(draw, actor)
        event: dict[str, Any] = {
            "uuid": uuid,
            "timestamp": format_nanos(ts_ns),
            "actor_uuid": who.uuid,
            "actor_details": who.v1 if v1 else who.v2,
        }
        if not v1:
            event["actor_type"] = "external_user" if who.external else "user"
            event["actor_account_uuid"] = pool.msp_account_uuid if who.external else pool.account_uuid
            event["account_uuid"] = pool.account_uuid
        event["action"] = V1_AUDIT_ACTION.get(action, action) if v1 else action
        event["object_type"] = V1_OBJECT_TYPE.get(object_type, object_type) if v1 else object_type
        self._audit_object(draw, event, shape, actor, action)
        event["session"] = self._session(actor, device, ts_ns)
        location = self._location(draw, pool.devices[device].place, 90)
        if location is not None:
            event["location"] = location
        return event

    def _audit_object(self, draw: Draw, event: dict[str, Any], shape: str, actor: int, action: str) -> None:
        pool = self.pool
        if shape in ("user", "self"):
            target = pool.people[actor if shape == "self" else draw.pick(pool.staff)]
            event["object_uuid"] = target.uuid
            event["object_details"] = target.v1
        elif shape == "account":
            event["object_uuid"] = pool.account_uuid
        elif shape == "msp":
            event["object_uuid"] = pool.msp_account_uuid
        elif shape == "vault":
            event["object_uuid"] = draw.pick(pool.vaults)
        elif shape == "uva":
            member = _user(pool, draw)
            event["object_uuid"] = draw.pick(pool.vaults)
            event["aux_id"] = member.number
            event["aux_uuid"] = member.uuid
            event["aux_details"] = member.v1
        elif shape == "gva":
            event["object_uuid"] = draw.pick(pool.vaults)
            event["aux_uuid"] = draw.pick(pool.groups)
        elif shape == "gm":
            member = _user(pool, draw)
            event["object_uuid"] = draw.pick(pool.groups)
            event["aux_id"] = member.number
            event["aux_uuid"] = member.uuid
            event["aux_details"] = member.v1
            event["aux_info"] = "A" if draw.chance(20) else "R"
        elif shape == "group":
            event["object_uuid"] = draw.pick(pool.groups)
        elif shape == "device":
            dev = pool.devices[draw.below(len(pool.devices))]
            owner = pool.people[dev.owner]
            event["object_uuid"] = dev.uuid
            event["aux_id"] = dev.number
            event["aux_uuid"] = owner.uuid
            event["aux_details"] = owner.v1
        elif shape == "invite":
            event["object_uuid"] = draw.uuid()
            event["aux_info"] = f"new.hire{draw.below(10_000)}@example.com"
        elif shape == "item":
            item = draw.pick(pool.items)
            event["object_uuid"] = item.uuid
            event["aux_uuid"] = item.vault
        elif shape == "sa":
            sa = pool.people[draw.pick(pool.services)]
            event["object_uuid"] = sa.uuid
            event["object_details"] = sa.v1
        elif shape == "satoken":
            sa = pool.people[draw.pick(pool.services)]
            event["object_uuid"] = draw.pick(pool.service_tokens)
            event["aux_uuid"] = sa.uuid
            event["aux_details"] = sa.v1
            if action in ("create", "trename"):
                event["aux_info"] = f"token-{draw.below(1000):03d}"
        elif shape in ("sso", "sso_group"):
            event["object_uuid"] = draw.pick(pool.sso_configs)
            if shape == "sso_group":
                event["aux_uuid"] = draw.pick(pool.groups)
        elif shape == "self_other":
            event["object_uuid"] = draw.uuid()
            event["aux_info"] = pool.people[actor].email
        else:  # "other", "other_lower"
            event["object_uuid"] = draw.uuid(upper=shape == "other")

    # -- sign-in attempts -----------------------------------------------------------------------------

    def _signin(self, draw: Draw, ts_ns: int, v1: bool) -> dict[str, Any]:
        pool = self.pool
        uuid = draw.uuid()
        session_uuid = draw.uuid()
        category = _SIGNIN_CATEGORY.pick(draw)
        kind = (
            _SUCCESS_TYPE.pick(draw) if category == "success" else draw.pick(SIGNIN_CATEGORY_TYPES[category])
        )
        sso_denied = kind == "service_account_sso_denied"
        person = draw.pick(pool.services) if sso_denied else _user_index(pool, draw)
        device = pool.devices[self._device(draw, person)]
        place = device.place
        client = device.client
        details: dict[str, Any] | None = None
        if category.startswith("firewall"):
            place = draw.below(len(PLACES))
            ip = f"{PLACES[place][7]}.{draw.below(256)}.{draw.below(256)}.{1 + draw.below(254)}"
            client = {**client, "ip_address": ip}
            value = {
                "ip_blocked": ip,
                "anonymous_blocked": ip,
                "country_blocked": PLACES[place][2],
                "continent_blocked": PLACES[place][4],
            }.get(kind)
            details = None if value is None else {"value": value}
        target = pool.people[person]
        event: dict[str, Any] = {
            "uuid": uuid,
            "session_uuid": session_uuid,
            "timestamp": format_seconds(ts_ns),
            "category": category,
            "type": V1_SIGNIN_TYPE.get(kind, kind) if v1 else kind,
            "country": PLACES[place][3],
            "details": details,
            "target_user": target.v1 if v1 else target.v2,
            "client": client,
        }
        location = self._location(draw, place, 90)
        if location is not None:
            event["location"] = location
        if not v1:
            event["account_uuid"] = pool.account_uuid
        return event

    # -- item usages ----------------------------------------------------------------------------------

    def _itemusage(self, draw: Draw, ts_ns: int, v1: bool) -> dict[str, Any]:
        pool = self.pool
        uuid = draw.uuid()
        action = _ITEM_ACTION.pick(draw)
        person = draw.pick(pool.services) if action.startswith("server-") and draw.chance(80) else None
        if person is None:
            person = _user_index(pool, draw)
        device = pool.devices[self._device(draw, person)]
        item = draw.pick(pool.items)
        user = pool.people[person]
        event: dict[str, Any] = {
            "uuid": uuid,
            "timestamp": format_millis(ts_ns),
            "used_version": 1 + draw.below(item.versions),
            "vault_uuid": item.vault,
            "item_uuid": item.uuid,
        }
        if not (v1 and action == "other"):  # V1 has no `other`; older events simply lack an action
            event["action"] = action
        event["user"] = user.v1 if v1 else user.v2
        event["client"] = device.client
        location = self._location(draw, device.place, 88)
        if location is not None:
            event["location"] = location
        if not v1:
            event["account_uuid"] = pool.account_uuid
        return event


def _user_index(pool: Pool, draw: Draw) -> int:
    """A person for sign-ins and item usages: mostly staff, a few MSP technicians."""
    return draw.pick(pool.externals) if draw.chance(5) else draw.pick(pool.staff)


def _user(pool: Pool, draw: Draw) -> Person:
    return pool.people[_user_index(pool, draw)]


def format_timestamp(stream: str, ts_ns: int) -> str:
    """The `timestamp` text an event of `stream` carries for `ts_ns`."""
    return _FORMAT[stream](ts_ns)
