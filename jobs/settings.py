"""Every knob of clipbot, read from the environment (and `.env`), validated once at start.

Well-known names keep their usual spelling (REDIS_URL, DISCORD_TOKEN, CLIP_MODEL, ...); every
other knob is `CLIPBOT_<FIELD NAME>`. Adding a knob is one line: a field with a default and a
`description` (the README's configuration table is generated from these, see `markdown_table`).

    settings = load_settings()          # raises SettingsError naming the bad variable
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PREFIX = "CLIPBOT_"


def _env(name: str):
    """A field read from a well-known variable without the CLIPBOT_ prefix."""
    return AliasChoices(name)


class SettingsError(ValueError):
    """A configuration value is missing or invalid; the message names the variable."""


_NAMED_COLOURS = {"white": "#ffffff", "black": "#000000", "grey": "#808080", "gray": "#808080"}


def parse_colour(text: str) -> tuple[float, float, float] | None:
    """'grey' -> (0.502, 0.502, 0.502); '#ff8000' -> (1.0, 0.502, 0.0); '' -> None."""
    item = text.strip().lower()
    if not item:
        return None
    hexa = _NAMED_COLOURS.get(item, item)
    if not (len(hexa) == 7 and hexa[0] == "#" and all(c in "0123456789abcdef" for c in hexa[1:])):
        raise ValueError(f"{text!r} is not a colour: use white, black, grey, #rrggbb or nothing")
    return tuple(int(hexa[i:i + 2], 16) / 255 for i in (1, 3, 5))


class ImagineConfig(BaseModel):
    """The imagine engine's knobs: `CLIPBOT_IMAGINE_<FIELD>` (e.g. CLIPBOT_IMAGINE_BATCH_SIZE=8).

    Defaults suit the shipped small models (64 px CLIP, factor-4 VQGAN, both trained on 64 px
    scenes): at their native 64 px one shape fills a good part of the picture, as in their world;
    at 128 px the decoder's natural scale tiles the picture with many small blobs. Measured with
    `python -m worker.imagine.quality` (README). Larger sizes stay available up to max_pixels.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    width: int = Field(64, ge=8, le=4096, description="Default picture width in pixels.")
    height: int = Field(64, ge=8, le=4096, description="Default picture height in pixels.")
    steps: int = Field(100, ge=1, description="Default optimisation steps per picture.")
    max_steps: int = Field(500, ge=1, description="Most steps a job may ask for.")
    max_pixels: int = Field(256 * 256, ge=64, description="Pixel budget per picture: bounds memory and time per step.")
    min_side: int = Field(32, ge=8, description="Smallest width or height a job may ask for.")
    cutouts: int = Field(32, ge=1, le=1024, description="Random crops of the picture CLIP scores each step.")
    cut_min_size: float = Field(0.85, gt=0, le=1, description="Smallest cutout side as a fraction of the shorter side (large crops: the shipped CLIP only saw whole scenes).")
    cut_pow: float = Field(1.0, gt=0, description=">1 favours small cutouts (detail), <1 large ones (composition).")
    cut_supersample: int = Field(2, ge=1, le=8, description="Sample cutouts at this multiple and average down (cheap anti-aliasing).")
    flip: float = Field(0.5, ge=0, le=1, description="Probability of a horizontal flip per cutout.")
    # Strong geometric jitter (the shipped CLIP saw every shape at every quarter turn): only an outline
    # that still reads as the asked shape when turned, shifted and zoomed scores well, not a lump
    # tuned to one view. Shape fidelity 31% -> 62% (models/README.md); hub models keep the mild
    # community values in their profile.
    rotate_degrees: float = Field(90.0, ge=0, le=180, description="Largest rotation of a cutout.")
    scale_jitter: float = Field(0.3, ge=0, lt=1, description="Largest relative zoom of a cutout.")
    translate: float = Field(0.2, ge=0, le=1, description="Largest shift of a cutout, as a fraction of its side.")
    noise: float = Field(0.1, ge=0, description="Per-cutout Gaussian noise; its std is drawn uniformly from [0, noise].")
    lr: float = Field(0.1, gt=0, description="Adam learning rate on the latent.")
    # Why a grey canvas (numbers: worker/imagine/README.md): from random codes the asked colour floods
    # the picture or splits it into colour fields; from a plain canvas held near it the subject forms
    # on a plain background.
    canvas: str = Field("grey", description="Start picture: a plain canvas of this colour (white, black, grey or #rrggbb). Empty: random codes (init_grid), as with a VQGAN checkpoint that lacks its encoder. An init image replaces it.")
    canvas_weight: float = Field(1.5, ge=0, description="How strongly the picture is held near its canvas (Crowson's init weight): the background stays plain while the subject forms. 0: free.")
    canvas_from_prompt: bool = Field(True, description="When the prompt names its background ('a red star on a green background'; CSS colour names), the canvas starts in that colour instead.")
    init_grid: int = Field(2, ge=0, description="Random start when `canvas` is empty: 0 = a random code per position (Crowson's noise); g = one random code per cell of a g x g grid (a few flat regions).")
    preview_every: int = Field(10, ge=0, description="Steps between two progress previews (0: none).")
    preview_size: int = Field(128, ge=16, description="Longer side of previews (small pictures are enlarged by a whole factor).")
    gif_frames: int = Field(50, ge=2, le=500, description="Most frames in the timelapse GIF.")
    gif_size: int = Field(256, ge=16, description="Longer side of the timelapse (small pictures are enlarged by a whole factor).")
    gif_frame_ms: int = Field(80, ge=10, description="Time per GIF frame.")
    gif_max_bytes: int = Field(10 * 1024 * 1024, ge=1024, description="The GIF is shrunk until it fits (Discord's upload limit).")
    time_budget_s: float = Field(600.0, gt=0, description="A job stops (and delivers what it has) after this long.")
    batch_size: int = Field(4, ge=1, le=64, description="Same-size jobs one worker optimises together.")
    decode_per_image: Literal["auto"] | bool = Field("auto", description="`auto`: decode per image on CPU (bit-identical to solo) and batched on GPU; or true / false.")
    frames: int = Field(8, ge=0, le=16, description="Evenly spaced pictures of the timelapse kept at full size, so a member can pick an earlier one (the last is the final picture). 0: none.")
    frames_max_bytes: int = Field(4 * 1024 * 1024, ge=0, description="Most PNG bytes of those frames per job (a variations job's pictures share it); past it every other earlier frame is dropped.")

    @field_validator("canvas")
    @classmethod
    def _canvas(cls, value: str) -> str:
        parse_colour(value)  # raises, naming the value
        return value

    def canvas_rgb(self) -> tuple[float, float, float] | None:
        """`canvas` as RGB in [0, 1], None for random codes."""
        return parse_colour(self.canvas)

    @field_validator("decode_per_image", mode="before")
    @classmethod
    def _auto(cls, value):
        if isinstance(value, str):
            word = value.strip().lower()
            if word == "auto":
                return "auto"
            if word not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                raise ValueError("use auto, true or false")
        return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=PREFIX, env_file=".env", extra="ignore", populate_by_name=True, validate_default=True,
        # CLIPBOT_IMAGINE_BATCH_SIZE -> imagine.batch_size (split once, so field names keep their "_")
        env_nested_delimiter="_", env_nested_max_split=1,
    )

    # --- well-known names (no prefix)
    redis_url: str | None = Field(None, validation_alias=_env("REDIS_URL"), description="Redis to use, e.g. `redis://redis:6379/0` or `unix:///path/redis.sock`. Unset: start an embedded Redis (AOF) persisting under DATA_DIR.")
    discord_token: str | None = Field(None, validation_alias=_env("DISCORD_TOKEN"), description="Bot token; required by `python -m bot`.")
    discord_api_base: str | None = Field(None, validation_alias=_env("DISCORD_API_BASE"), description="Discord REST base URL override (a proxy or a test server). Unset: Discord's.")
    discord_gateway_url: str | None = Field(None, validation_alias=_env("DISCORD_GATEWAY_URL"), description="Discord gateway URL override. Unset: Discord's.")
    clip_model: str = Field("models/clip-shapes", validation_alias=_env("CLIP_MODEL"), description="CLIP model directory (HF format) or hub id.")
    vqgan_config: str = Field("models/vqgan-shapes/model.yaml", validation_alias=_env("VQGAN_CONFIG"), description="VQGAN model config (taming YAML).")
    vqgan_checkpoint: str = Field("models/vqgan-shapes/last.ckpt", validation_alias=_env("VQGAN_CHECKPOINT"), description="VQGAN checkpoint.")
    data_dir: Path = Field(Path("data"), validation_alias=_env("DATA_DIR"), description="Where local state lives (the embedded Redis's AOF and socket).")
    vqgan_model: str | None = Field(None, validation_alias=_env("VQGAN_MODEL"), description="A catalogue VQGAN name (`python -m worker models list`, e.g. `vqgan_imagenet_f16_16384`) or a folder holding `model.yaml` and `last.ckpt`; replaces VQGAN_CONFIG / VQGAN_CHECKPOINT unless those are set. CLIP_MODEL takes catalogue names too.")
    shard_count: int | None = Field(None, ge=1, le=65536, validation_alias=_env("SHARD_COUNT"), description="Gateway shards of the whole bot, over all bot processes (every process the same). Unset: Discord's recommendation.")
    shard_ids: str | None = Field(None, validation_alias=_env("SHARD_IDS"), description="The shards this bot process runs, a comma list such as `0,1` (needs SHARD_COUNT and a shared REDIS_URL); each shard in exactly one process. Unset: all.")

    # --- queue and transport (CLIPBOT_*)
    redis_prefix: str = Field("clipbot:", min_length=1, max_length=64, description="Prefix of every Redis key, so several deployments can share one Redis.")
    user_max_jobs: int = Field(3, ge=1, le=1000, description="Jobs one user may have queued or running at once.")
    visibility_timeout_s: float = Field(30.0, gt=0, le=3600, description="A claimed job whose worker sent no heartbeat for this long is reclaimed by another worker.")
    heartbeat_s: float = Field(5.0, gt=0, le=600, description="How often a worker refreshes its claims and its registry entry. Must be well under the visibility timeout.")
    dead_after_beats: int = Field(3, ge=2, le=100, description="Missed heartbeats after which a worker counts as dead: its registry entry expires and a live worker takes over its jobs at once (at least 2 s; the visibility timeout stays the backstop).")
    max_deliveries: int = Field(3, ge=1, le=100, description="Deliveries of one job before it is dead-lettered and the user told it failed.")
    blob_ttl_s: int = Field(86400, ge=10, description="Lifetime of stored images (uploads, previews, results) in seconds.")
    blob_max_bytes: int = Field(16 * 1024 * 1024, ge=1024, description="Largest blob (image, GIF) accepted.")
    events_maxlen: int = Field(100_000, ge=100, description="Approximate length the events stream is trimmed to.")
    metrics_port: int | None = Field(None, ge=1, le=65535, description="Serve Prometheus metrics on this port (`/metrics`, all interfaces). Unset: off. Bot and worker each serve their own: give each process its own value (README: Metrics).")
    job_ttl_s: int = Field(7 * 86400, ge=60, description="How long a finished job's status stays queryable.")
    blob_budget_bytes: int = Field(512 * 1024 * 1024, ge=1024 * 1024, description="Bytes of stored images (uploads, previews, results) past which new work is refused with a 'try again in a few minutes'; running jobs still deliver. Keep it well under Redis's maxmemory.")
    result_keep_s: int = Field(3600, ge=10, description="How long a delivered picture (its PNG and pick-a-frame frames) and a finished job's input images stay stored for the buttons that reuse them (Re-roll, Refine, find similar); the timelapse GIF and previews are deleted once posted.")
    redis_maxmemory: str = Field("1gb", pattern=r"^(|[0-9]+(b|kb|mb|gb)?)$", description="`maxmemory` of the embedded Redis (policy noeviction); empty: no limit. docker-compose.yml's Redis reads it too (default there `2gb`).")

    # --- worker (CLIPBOT_*)
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="Torch device for the engines: auto picks CUDA when available.")
    engines: str = Field("clip,imagine", description="Which engines a worker serves: `clip` (classify, index, find), `imagine`, or `clip,imagine`.")
    worker_id: str | None = Field(None, max_length=64, description="Worker name in the registry. Unset: host-pid.")
    handlers: str = Field("worker.handlers:build", description="`module:function` building the worker's job handlers (tests swap in fakes).")
    progress_interval_s: float = Field(1.0, ge=0, description="Least time between two Progress events of one job.")
    cancel_check_s: float = Field(0.25, ge=0, description="Least time between two cancel-flag reads of one job (cancel latency).")
    heartbeat_file: Path | None = Field(None, description="If set, the worker touches this file after every successful heartbeat (container healthcheck).")
    torch_threads: int = Field(0, ge=0, le=256, description="Torch (and BLAS) threads per worker; 0 = torch's default (one per core). Use 1 when the cores are shared with other busy processes: small ops slow down 3-30x when their threads wait for a preempted partner.")
    vqgan_allow_pickle: bool = Field(False, description="Allow a full (unsafe) unpickling of the VQGAN checkpoint when the safe loader refuses it. Only for trusted local files (`--vqgan-allow-pickle`).")
    shutdown_grace_s: float = Field(20.0, ge=0, description="On SIGTERM, how long a worker lets running jobs finish before releasing them to other workers.")
    parent_pid: int | None = Field(None, ge=1, description="Set by `python -m bot` for its local worker: the worker stops (gracefully) once this process is gone.")
    models_dir: Path = Field(Path("models"), description="Where `python -m worker models fetch` puts catalogue models, and where CLIP_MODEL / VQGAN_MODEL names are looked up.")
    model_mirror: str | None = Field(None, description="Base URL tried first for every catalogue file, as `<url>/<model name>/<file name>` (the models folder's layout): your own copies.")
    gpu_memory_fraction: float = Field(0.9, gt=0, le=1, description="Share of the GPU's memory the imagine engine plans its batches to stay within.")
    imagine: ImagineConfig = Field(default_factory=ImagineConfig, description="The imagine engine (below).")

    # --- bot (CLIPBOT_*)
    cooldown_s: float = Field(10.0, ge=0, le=86400, description="Least time between two jobs of one user (a server's /config overrides it).")
    edit_interval_s: float = Field(3.0, ge=0.2, le=600, description="Least time between two edits of one progress message (Discord rate limits edits).")
    max_attachment_bytes: int = Field(10 * 1024 * 1024, ge=1024, le=500 * 1024 * 1024, description="Largest attachment /classify, /imagine and Add to gallery accept (Discord's default upload limit).")
    min_image_side: int = Field(16, ge=1, le=4096, description="Smallest width or height of an attached image.")
    max_image_side: int = Field(4096, ge=16, le=65536, description="Largest width or height of an attached image.")
    hof_threshold: int = Field(5, ge=1, le=10_000, description="Up-votes that repost a generation to the hall-of-fame channel (a server's /config overrides it).")
    vote_up: str = Field("\N{THUMBS UP SIGN}", min_length=1, max_length=64, description="Reaction counted as an up-vote.")
    vote_down: str = Field("\N{THUMBS DOWN SIGN}", min_length=1, max_length=64, description="Reaction counted as a down-vote.")
    sync_commands: bool = Field(True, description="Bulk-overwrite the slash commands at start (globally, or in `CLIPBOT_DEV_GUILD` only).")
    guild_ready_timeout_s: float = Field(2.0, ge=0, le=600, description="How long discord.py waits for guilds after READY.")
    events_consumer: str = Field("bot", min_length=1, max_length=64, description="The bot's consumer name in the events group. Keep it stable across restarts (entries read but not acked are read again); one name per bot process.")
    application_id: int | None = Field(None, ge=1, validation_alias=AliasChoices("CLIPBOT_APPLICATION_ID", "DISCORD_APPLICATION_ID"), description="The Discord application's id (or `DISCORD_APPLICATION_ID`), for `python -m bot invite`. Unset: read from the token's first segment.")
    dev_guild: int | None = Field(None, ge=1, description="Server id: register the slash commands in this server only, where they appear at once (testing). Unset: globally, which can take up to an hour to appear.")
    discord_retry_min_s: float = Field(2.0, gt=0, le=600, description="First wait before retrying when Discord cannot be reached at start; doubles up to `CLIPBOT_DISCORD_RETRY_MAX_S`.")
    discord_retry_max_s: float = Field(120.0, gt=0, le=3600, description="Longest wait between two attempts to reach Discord.")
    daily_quota: int = Field(0, ge=0, le=100_000, description="Generations one member may start per server per UTC day (resets at midnight UTC); 0 = unlimited (a server's /config overrides it).")
    safety_labels: str = Field("", max_length=2600, description="Comma-separated labels the safety check flags (a server's /config overrides them); empty: no check unless a server sets labels. README: a starting list for real CLIP models.")
    safety_threshold: float = Field(0.5, gt=0, le=1, description="Probability of the likeliest safety label at which an image is flagged (a server's /config overrides it).")
    contest_close_lease_s: float = Field(120.0, ge=5, le=3600, description="How long a bot process that claimed a contest's close may take to post it before another process (or itself after a restart) takes over.")
    refine_steps: int | None = Field(None, ge=1, le=10_000, description="Steps of a Refine (a picture's prompt run again, starting from that picture). Unset: the steps of the job that made it.")
    queue_update_s: float = Field(15.0, ge=1, le=3600, description="How often the messages of queued generations are updated with their position and estimated wait (never more often than `CLIPBOT_EDIT_INTERVAL_S`).")

    @field_validator("engines")
    @classmethod
    def _known_engines(cls, value: str) -> str:
        names = [n.strip() for n in value.split(",")]
        if not names or any(n not in ("clip", "imagine") for n in names) or len(set(names)) != len(names):
            raise ValueError("use clip, imagine or clip,imagine")
        return ",".join(names)

    @field_validator("shard_ids")
    @classmethod
    def _shard_list(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        items = [item.strip() for item in value.split(",")]
        if not all(item.isdigit() for item in items) or len(set(map(int, items))) != len(items):
            raise ValueError("use distinct shard numbers separated by commas, e.g. 0,1")
        return ",".join(str(n) for n in sorted(map(int, items)))

    @model_validator(mode="after")
    def _shards_within_count(self) -> Settings:
        if self.shard_ids is None:
            return self
        if self.shard_count is None:
            raise ValueError("SHARD_IDS needs SHARD_COUNT (the total over all bot processes)")
        if int(self.shard_ids.split(",")[-1]) >= self.shard_count:
            raise ValueError(f"SHARD_IDS ({self.shard_ids}) must be below SHARD_COUNT ({self.shard_count})")
        return self

    @model_validator(mode="after")
    def _heartbeat_under_visibility(self) -> Settings:
        if self.heartbeat_s * 2 > self.visibility_timeout_s:
            raise ValueError(
                f"CLIPBOT_HEARTBEAT_S ({self.heartbeat_s}) must be at most half of "
                f"CLIPBOT_VISIBILITY_TIMEOUT_S ({self.visibility_timeout_s}), or live jobs get stolen"
            )
        return self


def env_name(field: str) -> str:
    """The environment variable that sets `field`."""
    info = Settings.model_fields[field]
    alias = info.validation_alias
    if isinstance(alias, AliasChoices):
        return str(alias.choices[0])
    return PREFIX + field.upper()


def load_settings(**overrides) -> Settings:
    """Settings from the environment and .env; `overrides` (field names) win. Clear errors."""
    try:
        return Settings(**overrides)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            if not err["loc"]:  # a rule across fields: its message names the variables
                lines.append(err["msg"].removeprefix("Value error, "))
                continue
            loc = str(err["loc"][0])
            name = env_name(loc) if loc in Settings.model_fields else loc
            if loc == "imagine" and len(err["loc"]) > 1:
                name = f"{PREFIX}IMAGINE_{str(err['loc'][1]).upper()}"
            lines.append(f"{name}={err.get('input')!r}: {err['msg']}")
        raise SettingsError("invalid configuration: " + "; ".join(lines)) from None


def _row(name: str, info) -> str:
    default = info.default
    shown = "unset" if default is None else f"`{default}`"
    return f"| `{name}` | {shown} | {info.description} |"


def markdown_table() -> str:
    """The README's configuration table, generated from the fields so the two never drift."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for field, info in Settings.model_fields.items():
        if field == "imagine":
            continue
        rows.append(_row(env_name(field), info))
    for field, info in ImagineConfig.model_fields.items():
        rows.append(_row(f"{PREFIX}IMAGINE_{field.upper()}", info))
    return "\n".join(rows)


if __name__ == "__main__":  # python -m jobs.settings  -> prints the README table
    print(markdown_table())
