"""A local fake Discord: REST API + gateway websocket + CDN on one aiohttp server.

The real discord.py bot connects to it over sockets (point `discord.http.Route.BASE` at
`api_base` and `DiscordWebSocket.DEFAULT_GATEWAY` at `gateway_url`, which the bot does from
DISCORD_API_BASE / DISCORD_GATEWAY_URL). Tests script gateway events (slash commands, context
menus, button clicks, reactions) and assert on the recorded REST calls.

What it models, and only that: the routes the bot uses; messages with attachments (served back
from a fake CDN), edits, deletes and reactions; interaction callbacks, followups and @original;
application command bulk overwrite (scripted interactions are checked against the registered
option names); the guild, its roles (@everyone and the bot's own role), the bot's member and
per-channel overwrites, read over REST as a doctor does; an optional token check (401 for any
other); injected failures: 429 with retry_after, 5xx, 404 for deleted messages or
channels, 403 for channels the bot may not post in.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

JSON = "application/json"  # discord.py parses JSON only when Content-Type is exactly this
EPHEMERAL = 1 << 6
_ids = itertools.count(1_100_000_000_000_000_000)


def snowflake() -> int:
    return next(_ids)


def _now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


# Permission bits we care about (discord.Permissions values).
PERM_VIEW_SEND = (1 << 10) | (1 << 11) | (1 << 14) | (1 << 15) | (1 << 16) | (1 << 6)  # view, send, embed, attach, history, react
PERM_MANAGE_MESSAGES = 1 << 13
PERM_MANAGE_GUILD = 1 << 5
PERM_THREADS = (1 << 35) | (1 << 38)  # create public threads, send messages in threads


@dataclass
class UploadedFile:
    field: str
    filename: str
    content_type: str | None
    data: bytes


@dataclass
class Call:
    """One REST request the bot made."""

    at: float  # time.monotonic()
    method: str
    path: str  # without the /api/v10 prefix
    query: dict[str, str]
    json: Any
    files: list[UploadedFile]
    status: int = 0
    auth: str | None = None  # the Authorization header

    def __repr__(self) -> str:  # short, for assertion messages
        j = json.dumps(self.json)[:160] if self.json is not None else ""
        return f"<{self.status} {self.method} {self.path} {j} files={[f.filename for f in self.files]}>"


@dataclass
class FakeUser:
    id: int
    name: str
    permissions: int = PERM_VIEW_SEND
    bot: bool = False
    joined_at: str | None = None  # ISO time the member joined the server; None: now
    roles: list[int] = field(default_factory=list)

    def json(self) -> dict:
        return {"id": str(self.id), "username": self.name, "discriminator": "0", "global_name": self.name,
                "avatar": None, "bot": self.bot}

    def member_json(self) -> dict:
        return {"user": self.json(), "roles": [str(r) for r in self.roles], "permissions": str(self.permissions),
                "joined_at": self.joined_at or _now_iso(),
                "deaf": False, "mute": False, "flags": 0, "nick": None, "avatar": None, "pending": False}


@dataclass
class Interaction:
    """A scripted interaction: what the test sent and when, to time the bot's answer."""

    id: int
    token: str
    sent_at: float
    payload: dict
    callbacks: list[Call] = field(default_factory=list)


@dataclass
class _Failure:
    method: str
    pattern: re.Pattern
    status: int
    times: int
    retry_after: float
    where: Callable[[Call], bool] | None = None


class FakeDiscord:
    def __init__(self) -> None:
        self.app_id = snowflake()
        self.bot_user = FakeUser(self.app_id, "clipbot", bot=True)
        self.guild_id = snowflake()
        self.guild_names: dict[int, str] = {self.guild_id: "art club"}
        self.shard_count = 1  # what GET /gateway/bot recommends
        self._shard_of_socket: dict[web.WebSocketResponse, tuple[int, int]] = {}  # socket -> (shard id, count)
        self.channels: dict[int, dict] = {}
        self.deleted_channels: set[int] = set()
        self.forbidden_channels: set[int] = set()
        self.messages: dict[int, dict] = {}
        self.blobs: dict[str, tuple[bytes, str]] = {}  # cdn path -> (bytes, content type)
        self.calls: list[Call] = []
        self.commands: dict[str, dict] = {}  # name -> registered command (with id)
        self.interactions: dict[str, Interaction] = {}  # token -> interaction
        self.identifies: list[dict] = []
        self.errors: list[str] = []  # exceptions inside the fake itself
        self._failures: list[_Failure] = []
        self._sockets: list[web.WebSocketResponse] = []
        self._seq = 0
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.token: str | None = None  # set: REST calls with another bot token answer 401
        self.bot_role_id = snowflake()
        self.bot_role_permissions = PERM_VIEW_SEND | PERM_THREADS  # what the invite granted
        self.roles: list[dict] = []  # the server's own roles (add_role), in GUILD_CREATE
        self.channel_id = self.add_channel("art")

    # ------------------------------------------------------------------ lifecycle

    async def start(self, port: int = 0) -> FakeDiscord:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/gateway", self._gateway)
        app.router.add_get("/cdn/{path:.*}", self._cdn)
        app.router.add_route("*", "/api/v10/{path:.*}", self._rest)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        for ws in list(self._sockets):
            try:
                await asyncio.wait_for(ws.close(), 2)
            except TimeoutError:
                pass
        if self._runner:
            await asyncio.wait_for(self._runner.cleanup(), 10)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_base(self) -> str:
        return f"{self.base}/api/v10"

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/gateway"

    # ------------------------------------------------------------------ world state

    def add_guild(self, name: str, shard: int | None = None, shard_count: int = 1) -> tuple[int, int]:
        """Another server with the bot in it and one channel; `shard`: an id that Discord's rule
        ((id >> 22) % shard_count) puts on that shard. Returns (guild id, channel id)."""
        gid = snowflake()
        if shard is not None:
            gid += ((shard - (gid >> 22)) % shard_count) << 22
        self.guild_names[gid] = name
        return gid, self.add_channel(f"{name}-art", guild=gid)

    def guild_of_channel(self, cid: int) -> int:
        channel = self.channels.get(cid) or {}
        return int(channel.get("guild_id") or self.guild_id)  # a DM channel: the first guild, as before

    def add_channel(self, name: str, guild: int | None = None) -> int:
        cid = snowflake()
        self.channels[cid] = {"id": str(cid), "type": 0, "name": name, "guild_id": str(guild or self.guild_id),
                              "position": len(self.channels), "permission_overwrites": [], "nsfw": False,
                              "parent_id": None, "topic": None, "last_message_id": None,
                              "rate_limit_per_user": 0, "flags": 0}
        return cid

    async def create_channel(self, name: str) -> int:
        """A channel made while the bot is connected: it hears CHANNEL_CREATE, as from Discord."""
        cid = self.add_channel(name)
        await self.dispatch("CHANNEL_CREATE", self.channels[cid])
        return cid

    def add_role(self, name: str) -> int:
        """A server role (before the bot starts: the bot learns roles from GUILD_CREATE)."""
        rid = snowflake()
        self.roles.append({"id": str(rid), "name": name, "permissions": "0", "position": 1 + len(self.roles),
                           "color": 0, "hoist": False, "managed": False, "mentionable": False, "flags": 0})
        return rid

    def delete_channel(self, cid: int) -> None:
        self.deleted_channels.add(cid)

    def forbid_channel(self, cid: int) -> None:
        """The bot lost Send Messages there: posts and edits answer 403."""
        self.forbidden_channels.add(cid)

    def deny_bot(self, cid: int, permissions: int) -> None:
        """A channel overwrite that takes `permissions` from the bot's member there."""
        self.channels[cid]["permission_overwrites"].append(
            {"id": str(self.bot_user.id), "type": 1, "allow": "0", "deny": str(permissions)})

    def delete_message(self, mid: int) -> None:
        self.messages.pop(mid, None)

    def user(self, name: str, permissions: int = PERM_VIEW_SEND) -> FakeUser:
        return FakeUser(snowflake(), name, permissions)

    def fail_next(self, method: str, path_regex: str, status: int, times: int = 1, retry_after: float = 0.3,
                  where: Callable[[Call], bool] | None = None) -> _Failure:
        """Answer the next `times` matching requests with `status` (429 carries retry_after).
        `where` narrows the match further (e.g. only requests that upload a GIF). Setting the
        returned failure's `times` to 0 ends it early."""
        failure = _Failure(method.upper(), re.compile(path_regex), status, times, retry_after, where)
        self._failures.append(failure)
        return failure

    def upload(self, data: bytes, filename: str, content_type: str | None = "image/png",
               width: int | None = None, height: int | None = None, size: int | None = None) -> dict:
        """Put bytes on the fake CDN; returns an attachment payload as Discord sends it."""
        aid = snowflake()
        path = f"attachments/{aid}/{filename}"
        self.blobs[path] = (data, content_type or "application/octet-stream")
        att = {"id": str(aid), "filename": filename, "size": len(data) if size is None else size,
               "url": f"{self.base}/cdn/{path}", "proxy_url": f"{self.base}/cdn/{path}"}
        if content_type:
            att["content_type"] = content_type
        if width is not None:
            att["width"], att["height"] = width, height
        return att

    def post_user_message(self, author: FakeUser, content: str, attachments: list[dict], channel: int | None = None) -> dict:
        """A message a member posted (target of the "Add to gallery" context menu)."""
        cid = channel or self.channel_id
        return self._new_message(cid, author, content, attachments=attachments, via="user")

    def channel_messages(self, cid: int | None = None, via: str | None = None) -> list[dict]:
        """Messages in a channel; via="channel": only those posted with the bot token (not interaction replies)."""
        cid = cid or self.channel_id
        return [self._message_json(int(m["id"])) for m in self.messages.values()
                if int(m["channel_id"]) == cid and (via is None or m["_via"] == via)]

    # ------------------------------------------------------------------ assertions

    def find_calls(self, method: str | None = None, path: str | None = None, since: float = 0.0) -> list[Call]:
        rx = re.compile(path) if path else None
        return [c for c in self.calls if c.at >= since and (method is None or c.method == method)
                and (rx is None or rx.search(c.path))]

    async def wait_for(self, pred: Callable[[], Any], timeout: float = 20.0) -> Any:
        """Wait until pred() is truthy (re-checked after every request); returns its value."""
        deadline = time.monotonic() + timeout
        async with self._changed:
            while True:
                value = pred()
                if value:
                    return value
                left = deadline - time.monotonic()
                if left <= 0:
                    tail = "\n".join(map(repr, self.calls[-15:]))
                    raise AssertionError(f"timed out after {timeout}s waiting for condition; last calls:\n{tail}")
                try:
                    await asyncio.wait_for(self._changed.wait(), timeout=min(left, 0.25))
                except TimeoutError:
                    pass

    async def wait_call(self, method: str, path: str, since: float = 0.0, timeout: float = 20.0,
                        where: Callable[[Call], bool] = lambda c: True, ok: bool = True) -> Call:
        """The first answered call matching; ok=True: only successful (2xx) ones."""
        def good(c: Call) -> bool:
            return bool(c.status) and (not ok or 200 <= c.status < 300) and where(c)
        return await self.wait_for(lambda: next((c for c in self.find_calls(method, path, since) if good(c)), None),
                                   timeout)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # ------------------------------------------------------------------ gateway scripting

    async def wait_ready(self, timeout: float = 20.0) -> None:
        """Until the bot identified and registered its commands."""
        await self.wait_for(lambda: self.identifies and self.commands, timeout)

    async def dispatch(self, event: str, data: dict) -> None:
        """Send an event to the connection of the shard that runs its guild (no guild: shard 0)."""
        guild = int(data["guild_id"]) if data.get("guild_id") else None
        sockets = [ws for ws, (shard, count) in self._shard_of_socket.items()
                   if ws in self._sockets and shard == ((guild >> 22) % count if guild else 0)]
        if not sockets:
            raise AssertionError(f"no bot connected to the fake gateway for {event} of guild {guild}")
        self._seq += 1
        msg = json.dumps({"op": 0, "t": event, "s": self._seq, "d": data})
        for ws in sockets:
            await ws.send_str(msg)

    def _interaction_base(self, itype: int, user: FakeUser, channel: int | None) -> tuple[dict, int, str]:
        cid = channel or self.channel_id
        gid = self.guild_of_channel(cid)
        iid, token = snowflake(), f"tok{snowflake()}"
        payload = {"id": str(iid), "application_id": str(self.app_id), "type": itype, "token": token, "version": 1,
                   "guild_id": str(gid), "channel_id": str(cid), "channel": self.channels.get(cid) or
                   {"id": str(cid), "type": 0, "guild_id": str(gid), "name": "gone"},
                   "member": user.member_json(), "app_permissions": str(PERM_VIEW_SEND), "locale": "en-US",
                   "guild_locale": "en-US", "entitlements": [], "authorizing_integration_owners": {"0": str(gid)},
                   "context": 0, "attachment_size_limit": 25 * 1024 * 1024}
        return payload, iid, token

    async def _send_interaction(self, payload: dict, iid: int, token: str) -> Interaction:
        inter = Interaction(iid, token, time.monotonic(), payload)
        self.interactions[token] = inter
        await self.dispatch("INTERACTION_CREATE", payload)
        return inter

    async def slash(self, name: str, user: FakeUser, /, channel: int | None = None, **options: Any) -> Interaction:
        """Run /name with options ("group sub" runs a subcommand). Attachment options take the dict
        returned by `upload`."""
        name, _, sub = name.partition(" ")
        return await self.slash_sub(name, sub or None, user, channel=channel, **options)

    async def slash_sub(self, name: str, sub: str | None, user: FakeUser, /, channel: int | None = None,
                        **options: Any) -> Interaction:
        """Run /name sub with options (sub None: a plain command)."""
        cmd = self.commands.get(name)
        if cmd is None or cmd.get("type", 1) != 1:
            raise AssertionError(f"/{name} is not registered; registered: {sorted(self.commands)}")
        spec = cmd
        if sub is not None:
            spec = next((o for o in cmd.get("options", []) if o["type"] == 1 and o["name"] == sub), None)
            if spec is None:
                raise AssertionError(f"/{name} has no subcommand {sub!r}")
        known = {o["name"]: o for o in spec.get("options", [])}
        opts, resolved = [], {}
        for key, value in options.items():
            if key not in known:
                raise AssertionError(f"/{name} has no option {key!r}; it has {sorted(known)}")
            otype = known[key]["type"]
            if otype == 11:  # attachment
                resolved.setdefault("attachments", {})[value["id"]] = value
                value = value["id"]
            elif otype == 8:  # role
                resolved.setdefault("roles", {})[str(value)] = {
                    "id": str(value), "name": f"role{value}", "permissions": "0", "position": 1, "color": 0,
                    "hoist": False, "managed": False, "mentionable": False, "flags": 0}
                value = str(value)
            elif otype == 7:  # channel
                resolved.setdefault("channels", {})[str(value)] = {**self.channels[value], "permissions": "0"}
                value = str(value)
            opts.append({"name": key, "type": otype, "value": value})
        for o in known.values():
            if o.get("required") and o["name"] not in options:
                raise AssertionError(f"/{name} requires option {o['name']!r}")
        if sub is not None:
            opts = [{"name": sub, "type": 1, "options": opts}]
        payload, iid, token = self._interaction_base(2, user, channel)
        payload["data"] = {"id": cmd["id"], "name": name, "type": 1, "options": opts, "resolved": resolved,
                           "guild_id": payload["guild_id"]}
        return await self._send_interaction(payload, iid, token)

    async def message_command(self, name: str, user: FakeUser, message: dict) -> Interaction:
        cmd = self.commands.get(name)
        if cmd is None or cmd.get("type") != 3:
            raise AssertionError(f"message command {name!r} is not registered")
        payload, iid, token = self._interaction_base(2, user, int(message["channel_id"]))
        payload["data"] = {"id": cmd["id"], "name": name, "type": 3, "target_id": message["id"],
                           "resolved": {"messages": {message["id"]: message}}, "guild_id": payload["guild_id"]}
        return await self._send_interaction(payload, iid, token)

    async def click(self, message: dict, custom_id: str, user: FakeUser) -> Interaction:
        payload, iid, token = self._interaction_base(3, user, int(message["channel_id"]))
        payload["message"] = message
        payload["data"] = {"custom_id": custom_id, "component_type": 2}
        return await self._send_interaction(payload, iid, token)

    async def select(self, message: dict, custom_id: str, values: list[str], user: FakeUser) -> Interaction:
        """Pick `values` in the select menu `custom_id` of a message (a component interaction)."""
        payload, iid, token = self._interaction_base(3, user, int(message["channel_id"]))
        payload["message"] = message
        payload["data"] = {"custom_id": custom_id, "component_type": 3, "values": values}
        return await self._send_interaction(payload, iid, token)

    async def react(self, message: dict, user: FakeUser, emoji: str, add: bool = True) -> None:
        data = {"user_id": str(user.id), "channel_id": message["channel_id"], "message_id": message["id"],
                "guild_id": str(self.guild_of_channel(int(message["channel_id"]))),
                "emoji": {"id": None, "name": emoji}, "burst": False, "type": 0}
        if add:
            data["member"] = user.member_json()
        await self.dispatch("MESSAGE_REACTION_ADD" if add else "MESSAGE_REACTION_REMOVE", data)

    def responses(self, inter: Interaction) -> list[Call]:
        """Every REST call made with this interaction's token (callback, @original, followups)."""
        return [c for c in self.calls if inter.token in c.path and c.status]

    # ------------------------------------------------------------------ gateway

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_str(json.dumps({"op": 10, "d": {"heartbeat_interval": 41250}}))
        self._sockets.append(ws)
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                data = json.loads(msg.data)
                op = data.get("op")
                if op == 1:
                    await ws.send_str(json.dumps({"op": 11}))
                elif op == 2:
                    self.identifies.append(data["d"])
                    shard, count = data["d"].get("shard") or (0, 1)
                    self._shard_of_socket[ws] = (shard, count)
                    await self._send_ready(ws, [g for g in self.guild_names if (g >> 22) % count == shard])
                elif op == 6:  # RESUME: we keep no sessions; ask for a fresh IDENTIFY
                    await ws.send_str(json.dumps({"op": 9, "d": False}))
        finally:
            self._sockets.remove(ws)
            self._shard_of_socket.pop(ws, None)
        return ws

    async def _send_ready(self, ws: web.WebSocketResponse, guilds: list[int]) -> None:
        """READY, then GUILD_CREATE for each guild of the connection's shard."""
        self._seq += 1
        ready = {"v": 10, "user": self.bot_user.json(), "guilds": [{"id": str(g), "unavailable": True} for g in guilds],
                 "session_id": f"s{snowflake()}", "resume_gateway_url": self.gateway_url,
                 "application": {"id": str(self.app_id), "flags": 0}, "private_channels": [], "relationships": []}
        if ws in self._shard_of_socket:
            ready["shard"] = list(self._shard_of_socket[ws])
        await ws.send_str(json.dumps({"op": 0, "t": "READY", "s": self._seq, "d": ready}))
        for guild in guilds:
            self._seq += 1
            await ws.send_str(json.dumps({"op": 0, "t": "GUILD_CREATE", "s": self._seq, "d": self._guild_json(guild)}))
        await self._notify()

    def _guild_json(self, guild: int | None = None) -> dict:
        gid = guild or self.guild_id
        everyone = {"id": str(gid), "name": "@everyone", "permissions": str(PERM_VIEW_SEND), "position": 0,
                    "color": 0, "hoist": False, "managed": False, "mentionable": False, "flags": 0}
        bot_role = {**everyone, "id": str(self.bot_role_id), "name": "clipbot", "position": 1, "managed": True,
                    "permissions": str(self.bot_role_permissions), "tags": {"bot_id": str(self.bot_user.id)}}
        return {"id": str(gid), "name": self.guild_names[gid], "icon": None, "owner_id": "1", "roles": [everyone, bot_role, *self.roles],
                "channels": self._live_channels(gid),
                "members": [self._bot_member_json()], "member_count": 3, "unavailable": False, "features": [],
                "emojis": [], "stickers": [], "threads": self._live_channels(gid, (11,)), "voice_states": [], "presences": [],
                "stage_instances": [], "guild_scheduled_events": [], "soundboard_sounds": [], "large": False,
                "mfa_level": 0, "verification_level": 0, "explicit_content_filter": 0,
                "default_message_notifications": 0, "system_channel_flags": 0, "premium_tier": 0,
                "preferred_locale": "en-US", "nsfw_level": 0, "joined_at": _now_iso(), "afk_timeout": 300}

    def _live_channels(self, guild: int | None = None, types: tuple[int, ...] = (0, 2, 4, 5)) -> list[dict]:
        gid = str(guild or self.guild_id)
        return [c for cid, c in self.channels.items()
                if cid not in self.deleted_channels and c.get("guild_id") == gid and c["type"] in types]

    def _bot_member_json(self) -> dict:
        return {**self.bot_user.member_json(), "roles": [str(self.bot_role_id)]}

    # ------------------------------------------------------------------ CDN

    async def _cdn(self, request: web.Request) -> web.Response:
        blob = self.blobs.get(request.match_info["path"])
        if blob is None:
            return web.Response(status=404)
        return web.Response(body=blob[0], content_type=blob[1])

    # ------------------------------------------------------------------ REST

    def _json(self, data: Any, status: int = 200, headers: dict | None = None) -> web.Response:
        # web.json_response would add "; charset=utf-8", which discord.py refuses to parse.
        return web.Response(status=status, body=json.dumps(data).encode(), headers={"Content-Type": JSON, **(headers or {})})

    def _error(self, status: int, code: int, message: str) -> web.Response:
        return self._json({"code": code, "message": message}, status)

    async def _rest(self, request: web.Request) -> web.Response:
        path = "/" + request.match_info["path"]
        payload: Any = None
        files: list[UploadedFile] = []
        ctype = request.headers.get("Content-Type", "")
        if ctype.startswith("multipart/"):
            reader = await request.multipart()
            async for part in reader:
                body = await part.read()
                if part.name == "payload_json":
                    payload = json.loads(body)
                else:
                    files.append(UploadedFile(part.name or "", part.filename or "",
                                              part.headers.get("Content-Type"), bytes(body)))
        elif request.can_read_body:
            raw = await request.read()
            payload = json.loads(raw) if raw else None
        call = Call(time.monotonic(), request.method, path, dict(request.query), payload, files,
                    auth=request.headers.get("Authorization"))
        self.calls.append(call)
        inter = next((i for t, i in self.interactions.items() if t in path), None)
        if inter is not None:
            inter.callbacks.append(call)
        try:
            resp = self._injected(call) or self._route(call)
        except Exception as exc:  # a bug in the fake: recorded (the harness fails the test on it), answered 500
            self.errors.append(f"{call.method} {path}: {exc!r}")
            resp = self._error(500, 0, f"fake discord error: {exc!r}")
        call.status = resp.status
        await self._notify()
        return resp

    def _injected(self, call: Call) -> web.Response | None:
        for f in self._failures:
            if f.times > 0 and f.method == call.method and f.pattern.search(call.path) and (f.where is None or f.where(call)):
                f.times -= 1
                if f.status == 429:
                    body = {"message": "You are being rate limited.", "retry_after": f.retry_after, "global": False}
                    return self._json(body, 429, {"Via": "1.1 google", "Retry-After": str(f.retry_after)})
                if f.status == 413:
                    return self._error(413, 40005, "Request entity too large")
                return self._error(f.status, 0, f"injected {f.status}")
        return None

    def _route(self, call: Call) -> web.Response:
        m, p, j = call.method, call.path, call.json
        if self.token is not None and not p.startswith(("/webhooks/", "/interactions/")) \
                and call.auth != f"Bot {self.token}":
            return self._error(401, 0, "401: Unauthorized")
        if p == "/users/@me/guilds" and m == "GET":
            return self._json([{"id": str(g), "name": name, "icon": None, "owner": False,
                                "permissions": str(self.bot_role_permissions), "features": []}
                               for g, name in self.guild_names.items()])
        if p == "/gateway/bot" and m == "GET":
            return self._json({"url": self.gateway_url, "shards": self.shard_count, "session_start_limit": {
                "total": 1000, "remaining": 1000, "reset_after": 0, "max_concurrency": 1}})
        if mm := re.fullmatch(r"/guilds/(\d+)(/channels|/members/\d+)?", p):
            if int(mm.group(1)) not in self.guild_names:
                return self._error(404, 10004, "Unknown Guild")
            if mm.group(2) == "/channels":
                return self._json(self._live_channels(int(mm.group(1))))
            if mm.group(2):
                if not p.endswith("/" + str(self.bot_user.id)):
                    return self._error(404, 10007, "Unknown Member")
                return self._json(self._bot_member_json())
            return self._json(self._guild_json(int(mm.group(1))))
        if p == "/users/@me" and m == "GET":
            return self._json(self.bot_user.json())
        if p == "/oauth2/applications/@me" and m == "GET":
            return self._json({"id": str(self.app_id), "name": "clipbot", "description": "", "icon": None,
                               "bot_public": True, "bot_require_code_grant": False, "owner": self.bot_user.json(),
                               "verify_key": "0" * 64, "flags": 0, "summary": ""})
        if mm := re.fullmatch(r"/applications/\d+(?:/guilds/\d+)?/commands", p):
            if m == "PUT":
                self.commands = {}
                for cmd in j:
                    cmd = {"description": "", "default_member_permissions": None, "nsfw": False, **cmd,
                           "id": str(snowflake()), "application_id": str(self.app_id), "version": "1"}
                    self.commands[cmd["name"]] = cmd
                return self._json(list(self.commands.values()))
            return self._json(list(self.commands.values()))
        if mm := re.fullmatch(r"/interactions/(\d+)/([^/]+)/callback", p):
            return self._interaction_callback(mm.group(2), j, call.files)
        if mm := re.fullmatch(r"/webhooks/(\d+)/([^/]+)", p):
            inter = self.interactions.get(mm.group(2))
            if inter is None:
                return self._error(404, 10015, "Unknown Webhook")
            cid = int(inter.payload["channel_id"])
            msg = self._new_message(cid, self.bot_user, (j or {}).get("content") or "", payload=j, files=call.files,
                                    flags=(j or {}).get("flags", 0), via="followup")
            return self._json(msg)
        if mm := re.fullmatch(r"/webhooks/(\d+)/([^/]+)/messages/([^/]+)", p):
            inter = self.interactions.get(mm.group(2))
            if inter is None:
                return self._error(404, 10015, "Unknown Webhook")
            key = mm.group(3)
            mid = inter.payload.get("_original") if key == "@original" else int(key)
            return self._message_op(m, mid, j, call.files)
        if mm := re.fullmatch(r"/channels/(\d+)", p):
            cid = int(mm.group(1))
            if cid not in self.channels or cid in self.deleted_channels:
                return self._error(404, 10003, "Unknown Channel")
            return self._json(self.channels[cid])
        if mm := re.fullmatch(r"/channels/(\d+)(?:/messages/(\d+))?/threads", p):
            return self._new_thread(int(mm.group(1)), j or {})
        if p == "/users/@me/channels" and m == "POST":  # open a DM channel with a member
            cid = snowflake()
            self.channels[cid] = {"id": str(cid), "type": 1, "last_message_id": None,
                                  "recipients": [{"id": str(j["recipient_id"]), "username": "member",
                                                  "discriminator": "0", "avatar": None}]}
            return self._json(self.channels[cid])
        if mm := re.fullmatch(r"/channels/(\d+)/messages", p):
            cid = int(mm.group(1))
            if cid not in self.channels or cid in self.deleted_channels:
                return self._error(404, 10003, "Unknown Channel")
            if cid in self.forbidden_channels:
                return self._error(403, 50013, "Missing Permissions")
            if m == "POST":
                msg = self._new_message(cid, self.bot_user, (j or {}).get("content") or "", payload=j, files=call.files)
                return self._json(msg)
            return self._json(self.channel_messages(cid))
        if mm := re.fullmatch(r"/channels/(\d+)/messages/(\d+)", p):
            cid = int(mm.group(1))
            if cid not in self.channels or cid in self.deleted_channels:
                return self._error(404, 10003, "Unknown Channel")
            if cid in self.forbidden_channels and m != "GET":
                return self._error(403, 50013, "Missing Permissions")
            return self._message_op(m, int(mm.group(2)), j, call.files)
        if mm := re.fullmatch(r"/channels/(\d+)/messages/(\d+)/reactions/([^/]+)/@me", p):
            cid, mid = int(mm.group(1)), int(mm.group(2))
            if cid in self.deleted_channels or mid not in self.messages:
                return self._error(404, 10008, "Unknown Message")
            if cid in self.forbidden_channels:
                return self._error(403, 50013, "Missing Permissions")
            from urllib.parse import unquote
            emoji = unquote(mm.group(3))
            bot_reactions = self.messages[mid].setdefault("_bot_reactions", [])
            if m == "PUT" and emoji not in bot_reactions:
                bot_reactions.append(emoji)
            elif m == "DELETE" and emoji in bot_reactions:
                bot_reactions.remove(emoji)
            return web.Response(status=204)
        return self._error(404, 0, f"fake discord has no route {m} {p}")

    def _new_thread(self, parent: int, j: dict) -> web.Response:
        """A public thread of `parent` (a thread is a channel: its messages go to /channels/<thread>/messages)."""
        if parent not in self.channels or parent in self.deleted_channels:
            return self._error(404, 10003, "Unknown Channel")
        if parent in self.forbidden_channels:
            return self._error(403, 50013, "Missing Permissions")
        tid = snowflake()
        self.channels[tid] = {"id": str(tid), "type": j.get("type", 11), "name": j.get("name", "thread"),
                              "guild_id": str(self.guild_of_channel(parent)), "parent_id": str(parent),
                              "owner_id": str(self.bot_user.id), "last_message_id": None, "rate_limit_per_user": 0,
                              "message_count": 0, "member_count": 1, "flags": 0,
                              "thread_metadata": {"archived": False, "locked": False,
                                                  "auto_archive_duration": j.get("auto_archive_duration", 1440),
                                                  "archive_timestamp": _now_iso()}}
        return self._json(self.channels[tid])

    def threads(self, parent: int | None = None) -> list[dict]:
        parent = parent or self.channel_id
        return [c for c in self.channels.values() if c.get("parent_id") == str(parent) and c["type"] == 11]

    def _interaction_callback(self, token: str, j: dict, files: list[UploadedFile]) -> web.Response:
        inter = self.interactions.get(token)
        if inter is None:
            return self._error(404, 10062, "Unknown interaction")
        if inter.payload.get("_responded"):
            return self._error(400, 40060, "Interaction has already been acknowledged.")
        inter.payload["_responded"] = True
        rtype = j["type"]
        data = j.get("data") or {}
        result: dict = {"interaction": {"id": str(inter.id), "type": inter.payload["type"]}}
        cid = int(inter.payload["channel_id"])
        if rtype in (4, 5):  # message / deferred message: an @original message now exists
            msg = self._new_message(cid, self.bot_user, data.get("content") or "", payload=data, files=files,
                                    flags=data.get("flags", 0) | (128 if rtype == 5 else 0), via="interaction")
            inter.payload["_original"] = int(msg["id"])
            result["interaction"].update(response_message_id=msg["id"], response_message_loading=rtype == 5,
                                         response_message_ephemeral=bool(data.get("flags", 0) & EPHEMERAL))
            result["resource"] = {"type": rtype, "message": msg}
        elif rtype == 7:  # update the component's message
            mid = int(inter.payload["message"]["id"])
            self._message_op("PATCH", mid, data, files)
            result["resource"] = {"type": rtype, "message": self._message_json(mid)}
        return self._json(result)

    def _new_message(self, cid: int, author: FakeUser, content: str, payload: dict | None = None,
                     files: list[UploadedFile] | None = None, attachments: list[dict] | None = None,
                     flags: int = 0, via: str = "channel") -> dict:
        mid = snowflake()
        self.messages[mid] = {"id": str(mid), "channel_id": str(cid), "guild_id": str(self.guild_of_channel(cid)),
                              "author": author.json(), "content": content, "attachments": attachments or [],
                              "embeds": [], "components": [], "flags": flags, "edited_timestamp": None,
                              "timestamp": _now_iso(), "_bot_reactions": [], "_edits": 0, "_via": via}
        if payload or files:
            self._apply_edit(mid, payload or {}, files or [], new=True)
        return self._message_json(mid)

    def _message_json(self, mid: int) -> dict:
        m = self.messages[mid]
        out = {k: v for k, v in m.items() if not k.startswith("_")}
        out.update(type=0, mentions=[], mention_roles=[], pinned=False, mention_everyone=False, tts=False)
        return out

    def _apply_edit(self, mid: int, j: dict, files: list[UploadedFile], new: bool = False) -> None:
        m = self.messages[mid]
        for key in ("content", "embeds", "components", "flags"):
            if key in j:
                m[key] = j[key] if j[key] is not None else ([] if key != "content" else "")
        by_index = {}
        for f in files:
            mm = re.fullmatch(r"files\[(\d+)\]", f.field)
            if mm:
                by_index[int(mm.group(1))] = f
        if "attachments" in j or files:
            old = {a["id"]: a for a in m["attachments"]}
            atts = []
            for a in j.get("attachments", [{"id": i} for i in by_index]):
                aid = str(a["id"])
                if aid in old:
                    atts.append(old[aid])
                elif int(a["id"]) in by_index:
                    f = by_index[int(a["id"])]
                    atts.append(self.upload(f.data, f.filename or a.get("filename", "file"), f.content_type))
            m["attachments"] = atts
        if not new:
            m["edited_timestamp"] = _now_iso()
            m["_edits"] += 1

    def _message_op(self, method: str, mid: int | None, j: dict | None, files: list[UploadedFile]) -> web.Response:
        if mid is None or mid not in self.messages:
            return self._error(404, 10008, "Unknown Message")
        if method == "GET":
            return self._json(self._message_json(mid))
        if method == "DELETE":
            del self.messages[mid]
            return web.Response(status=204)
        if method == "PATCH":
            self._apply_edit(mid, j or {}, files)
            return self._json(self._message_json(mid))
        return self._error(405, 0, "method not allowed")

    def bot_reactions(self, mid: int | str) -> list[str]:
        return list(self.messages[int(mid)]["_bot_reactions"])
