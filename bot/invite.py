"""`python -m bot invite [--json]`: the OAuth2 link that adds the bot to a server.

It asks for the `bot` and `applications.commands` scopes and exactly the permissions the
features need (bot/permissions.py); the application id comes from CLIPBOT_APPLICATION_ID /
DISCORD_APPLICATION_ID or the token's first segment, so no network is needed.
"""
from __future__ import annotations

import argparse
import json
import sys

from bot.permissions import FEATURES, SCOPES, NoApplicationId, application_id, invite_permissions, invite_url, pretty
from jobs.settings import SettingsError, load_settings


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bot invite", description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print JSON on stdout and nothing else")
    ap.add_argument("--guild", type=int, help="preselect this server id on the invite page")
    args = ap.parse_args(argv)
    try:
        app_id = application_id(load_settings())
    except (SettingsError, NoApplicationId) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    url = invite_url(app_id, args.guild)
    perms = invite_permissions()
    if args.json:
        print(json.dumps({"url": url, "application_id": app_id, "scopes": list(SCOPES), "permissions": perms.value,
                          "features": {f.name: list(f.permissions) for f in FEATURES}}))
        return 0
    print(url)
    print(f"\nscopes: {', '.join(SCOPES)}; permissions {perms.value}:", file=sys.stderr)
    for f in FEATURES:
        print(f"  {f.name} ({', '.join(pretty(p) for p in f.permissions)}): {f.why}", file=sys.stderr)
    return 0
