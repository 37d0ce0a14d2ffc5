"""The fixed cast of an account: users, groups, vaults, items, devices, places and client apps.

Built once from the seed (a few hundred small objects), so generated events are relational: the same
people use the same devices from the same cities, items live in vaults, service accounts use the CLI.
Shared sub-objects (user, client and location dicts) are prebuilt here and reused by every event; the
serialiser never mutates them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from opsentinel.simulator.entropy import Draw

# (city, region, country name, ISO 3166 alpha-2, continent, latitude, longitude, IPv4 /8 prefix)
PLACES: tuple[tuple[str, str, str, str, str, float, float, int], ...] = (
    ("Toronto", "Ontario", "Canada", "CA", "North America", 43.6532, -79.3832, 99),
    ("Vancouver", "British Columbia", "Canada", "CA", "North America", 49.2827, -123.1207, 142),
    ("New York", "New York", "United States", "US", "North America", 40.7128, -74.006, 72),
    ("San Francisco", "California", "United States", "US", "North America", 37.7749, -122.4194, 104),
    ("Austin", "Texas", "United States", "US", "North America", 30.2672, -97.7431, 66),
    ("London", "England", "United Kingdom", "GB", "Europe", 51.5072, -0.1276, 81),
    ("Berlin", "Berlin", "Germany", "DE", "Europe", 52.52, 13.405, 85),
    ("Paris", "Île-de-France", "France", "FR", "Europe", 48.8566, 2.3522, 90),
    ("Amsterdam", "North Holland", "Netherlands", "NL", "Europe", 52.3676, 4.9041, 145),
    ("Zürich", "Zurich", "Switzerland", "CH", "Europe", 47.3769, 8.5417, 178),
    ("Dublin", "Leinster", "Ireland", "IE", "Europe", 53.3498, -6.2603, 87),
    ("São Paulo", "São Paulo", "Brazil", "BR", "South America", -23.5558, -46.6396, 177),
    ("Mexico City", "Mexico City", "Mexico", "MX", "North America", 19.4326, -99.1332, 187),
    ("Sydney", "New South Wales", "Australia", "AU", "Oceania", -33.8688, 151.2093, 101),
    ("Tokyo", "Tokyo", "Japan", "JP", "Asia", 35.6762, 139.6503, 126),
    ("Singapore", "Singapore", "Singapore", "SG", "Asia", 1.3521, 103.8198, 116),
    ("Bengaluru", "Karnataka", "India", "IN", "Asia", 12.9716, 77.5946, 49),
    ("Tel Aviv", "Tel Aviv District", "Israel", "IL", "Asia", 32.0853, 34.7818, 79),
    ("Cape Town", "Western Cape", "South Africa", "ZA", "Africa", -33.9249, 18.4241, 41),
)

# (app_name, app_version, platform_name, platform_version, os_name, os_version, weight)
CLIENT_APPS: tuple[tuple[str, str, str, str, str, str, int], ...] = (
    ("1Password Browser Extension", "20195", "Chrome", "120.0.6099.129", "MacOSX", "14.2.1", 14),
    ("1Password Browser Extension", "20195", "Chrome", "121.0.6167.85", "Windows", "10.0.22631", 10),
    ("1Password Browser Extension", "20127", "Firefox", "122.0", "Linux", "6.6.8", 4),
    ("1Password Extension", "1109", "Edge", "120.0.2210.91", "Windows", "10.0.19045", 4),
    ("1Password Browser Extension", "20195", "Safari", "17.2.1", "MacOSX", "14.2.1", 4),
    ("1Password for Mac", "70902005", "Apple", "MacBookPro16,1", "MacOSX", "14.3", 10),
    ("1Password for Mac", "81024012", "Apple", "Mac14,2", "MacOSX", "13.6.3", 6),
    ("1Password for Windows", "81024012", "Microsoft", "Surface Laptop 5", "Windows", "10.0.22631", 6),
    ("1Password for Linux", "81024012", "Linux", "x86_64", "Linux", "6.6.8", 2),
    ("1Password for iOS", "81024012", "Apple", "iPhone15,2", "iOS", "17.2.1", 7),
    ("1Password for Android", "81024012", "Google", "Pixel 8", "Android", "14", 5),
    ("1Password.com", "1738", "Chrome", "120.0.6099.129", "MacOSX", "14.2.1", 3),
)
# Clients used by service accounts and automation (server-* item usages).
AUTOMATION_APPS: tuple[tuple[str, str, str, str, str, str, int], ...] = (
    ("1Password CLI", "2240001", "", "arm64", "MacOSX", "14.2.1", 1),
    ("1Password CLI", "2250002", "", "x86_64", "Linux", "5.15.0", 1),
    ("1Password SDK", "0010001", "Python", "3.11.7", "Linux", "6.1.0", 1),
    ("1Password SCIM Bridge", "2090001", "", "x86_64", "Linux", "6.1.0", 1),
)

_FIRST = [
    "Wendy",
    "Ada",
    "Grace",
    "Alan",
    "Linus",
    "Margaret",
    "Ken",
    "Dennis",
    "Barbara",
    "Edsger",
    "Frances",
    "Donald",
    "Radia",
    "Tim",
    "Hedy",
    "John",
    "Sophie",
    "Katherine",
    "Guido",
    "Anita",
    "Niklaus",
    "Lynn",
    "Leslie",
    "Shafi",
    "Jean",
    "Vint",
    "Mary",
    "Yukihiro",
    "Bjarne",
    "Adele",
]
_LAST = [
    "Appleseed",
    "Lovelace",
    "Hopper",
    "Turing",
    "Torvalds",
    "Hamilton",
    "Thompson",
    "Ritchie",
    "Liskov",
    "Dijkstra",
    "Allen",
    "Knuth",
    "Perlman",
    "Berners-Lee",
    "Lamarr",
    "McCarthy",
    "Wilson",
    "Johnson",
    "Rossum",
    "Borg",
    "Wirth",
    "Conway",
    "Lamport",
    "Goldwasser",
    "Sammet",
    "Cerf",
    "Keller",
    "Matsumoto",
    "Stroustrup",
    "Goldberg",
]

DOMAIN = "example.com"
MSP_DOMAIN = "msp-partner.example"
SERVICE_DOMAIN = "1passwordserviceaccounts.com"


@dataclass(frozen=True)
class Person:
    """A user (or service account) of the account, or an MSP technician from another account."""

    uuid: str
    number: int  # internal numeric id, what `aux_id` carries for user-related audit events
    name: str
    email: str
    external: bool = False
    service: bool = False
    admin: bool = False
    # Prebuilt serialised forms: V1 `User`, V2 `UserV2` (MSP fields only for external users).
    v1: dict[str, Any] = field(default_factory=dict, compare=False)
    v2: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class Device:
    uuid: str
    number: int
    owner: int  # index into Pool.people
    place: int  # index into PLACES
    ip: str
    client: dict[str, Any] = field(compare=False)


@dataclass(frozen=True)
class Item:
    uuid: str
    vault: str
    versions: int


@dataclass
class Pool:
    """Everything events refer to; see module docstring."""

    account_uuid: str
    msp_account_uuid: str
    integration_uuid: str
    people: list[Person]
    groups: list[str]
    vaults: list[str]
    items: list[Item]
    devices: list[Device]
    devices_by_owner: dict[int, list[int]]
    locations: list[dict[str, Any]]
    staff: list[int]  # indices of ordinary people (not service accounts)
    admins: list[int]
    services: list[int]
    externals: list[int]
    service_tokens: list[str]
    sso_configs: list[str]


def _ipv4(draw: Draw, prefix: int) -> str:
    return f"{prefix}.{draw.below(256)}.{draw.below(256)}.{1 + draw.below(254)}"


def _ipv6(draw: Draw) -> str:
    return "2001:db8:" + ":".join(f"{draw.below(65536):x}" for _ in range(6))


def _client(app: tuple[str, str, str, str, str, str, int], ip: str) -> dict[str, Any]:
    name, version, platform, platform_version, os_name, os_version, _ = app
    return {
        "app_name": name,
        "app_version": version,
        "platform_name": platform,
        "platform_version": platform_version,
        "os_name": os_name,
        "os_version": os_version,
        "ip_address": ip,
    }


def _person(
    draw: Draw, used: set[str], account: str, *, external: bool, service: bool, admin: bool, tag: str
) -> Person:
    if service:
        name = tag
        email = f"{tag.lower().replace(' ', '-')}-{draw.below(10**6):06d}@{SERVICE_DOMAIN}"
    else:
        name = f"{draw.pick(_FIRST)} {draw.pick(_LAST)}"
        local = name.lower().replace(" ", ".")
        email = f"{local}@{MSP_DOMAIN if external else DOMAIN}"
        n = 2
        while email in used:
            email = f"{local}{n}@{MSP_DOMAIN if external else DOMAIN}"
            n += 1
    used.add(email)
    uuid = draw.uuid()
    v1 = {"uuid": uuid, "name": name, "email": email}
    v2 = dict(v1)
    if external:
        v2["user_type"] = "external_user"
        v2["user_account_uuid"] = account
    return Person(
        uuid=uuid,
        number=1_000_000 + draw.below(9_000_000),
        name=name,
        email=email,
        external=external,
        service=service,
        admin=admin,
        v1=v1,
        v2=v2,
    )


def build_pool(seed: int, *, people: int = 60) -> Pool:
    """The cast for `seed`; identical for identical arguments."""
    draw = Draw(f"{seed}:pool".encode())
    account = draw.uuid()
    msp_account = draw.uuid()
    integration = draw.uuid()
    used: set[str] = set()
    cast: list[Person] = []
    for i in range(people):
        cast.append(_person(draw, used, account, external=False, service=False, admin=i < 6, tag=""))
    for tag in ("SCIM Bridge", "Provisioning", "CI Deploy", "Secrets Automation"):
        cast.append(_person(draw, used, account, external=False, service=True, admin=False, tag=tag))
    for _ in range(5):
        cast.append(_person(draw, used, msp_account, external=True, service=False, admin=True, tag=""))
    staff = [i for i, p in enumerate(cast) if not p.service]
    services = [i for i, p in enumerate(cast) if p.service]

    locations: list[dict[str, Any]] = [
        {"country": country, "region": region, "city": city, "latitude": lat, "longitude": lon}
        for city, region, country, _iso, _cont, lat, lon, _pfx in PLACES
    ]
    apps = [(a, a[6]) for a in CLIENT_APPS]
    devices: list[Device] = []
    by_owner: dict[int, list[int]] = {}
    for owner, person in enumerate(cast):
        home = draw.below(len(PLACES))
        pool_apps = AUTOMATION_APPS if person.service else CLIENT_APPS
        for _ in range(1 if person.service else 1 + draw.below(3)):
            app = draw.pick(pool_apps) if person.service else _weighted_app(draw, apps)
            place = home if draw.chance(85) else draw.below(len(PLACES))
            ip = _ipv6(draw) if draw.chance(8) else _ipv4(draw, PLACES[place][7])
            by_owner.setdefault(owner, []).append(len(devices))
            devices.append(
                Device(
                    uuid=draw.uuid(upper=False),
                    number=10_000_000 + draw.below(90_000_000),
                    owner=owner,
                    place=place,
                    ip=ip,
                    client=_client(app, ip),
                )
            )
    vaults = [draw.uuid(upper=False) for _ in range(24)]
    items = [
        Item(uuid=draw.uuid(upper=False), vault=draw.pick(vaults), versions=1 + draw.below(12))
        for _ in range(400)
    ]
    return Pool(
        account_uuid=account,
        msp_account_uuid=msp_account,
        integration_uuid=integration,
        people=cast,
        groups=[draw.uuid(upper=False) for _ in range(12)],
        vaults=vaults,
        items=items,
        devices=devices,
        devices_by_owner=by_owner,
        locations=locations,
        staff=staff,
        admins=[i for i, p in enumerate(cast) if p.admin and not p.external],
        services=services,
        externals=[i for i, p in enumerate(cast) if p.external],
        service_tokens=[draw.uuid() for _ in range(6)],
        sso_configs=[draw.uuid() for _ in range(2)],
    )


def _weighted_app(
    draw: Draw, apps: list[tuple[tuple[str, str, str, str, str, str, int], int]]
) -> tuple[str, str, str, str, str, str, int]:
    total = sum(w for _, w in apps)
    r = draw.below(total)
    for app, w in apps:
        if r < w:
            return app
        r -= w
    return apps[-1][0]
