"""/config — per-server settings, for members with Manage Server."""
from __future__ import annotations

import discord
from discord import app_commands
from discord.ext import commands

from bot.app import ClipBot
from bot.guild_config import GuildConfig, parse_safety_labels
from bot.text import code_text, emoji_text

# /config safety_labels: these words instead of labels
LABELS_OFF, LABELS_DEFAULT = "off", "default"


def describe(cfg: GuildConfig, bot: ClipBot) -> str:
    settings = bot.settings
    chans = ", ".join(f"<#{c}>" for c in cfg.allowed_channels) or "all channels"
    words = ", ".join(f"`{code_text(w, 50)}`" for w in cfg.banned_words) or "none"
    hof = f"<#{cfg.hof_channel}> at {cfg.threshold(settings)} 👍" if cfg.hof_channel else "off"
    up, down = (emoji_text(e) for e in cfg.emojis(settings))
    quota = cfg.quota(settings)
    exempt = f" (members with <@&{cfg.quota_exempt_role}> are exempt)" if cfg.quota_exempt_role else ""
    policy = cfg.safety_policy(settings)
    safety = ("off" if policy is None else
              f"{', '.join(f'`{code_text(label, 100)}`' for label in policy.labels)} at {policy.threshold:g}")
    return (f"**Channels:** {chans}\n**Jobs per member:** {cfg.user_limit(settings)}\n"
            f"**Cooldown:** {cfg.cooldown(settings):g} s\n"
            f"**Banned words:** {words}\n**Hall of fame:** {hof}\n**Vote reactions:** {up} {down}\n"
            f"**Votes on one's own generations:** {'counted' if cfg.self_votes else 'ignored'}\n"
            f"**Daily generations per member:** {quota or 'unlimited'}{exempt}\n**Safety check:** {safety}")


class Config(commands.Cog):
    def __init__(self, bot: ClipBot):
        self.bot = bot

    @app_commands.command(name="config", description="Server settings for clipbot (Manage Server)")
    @app_commands.describe(
        allow_channel="Allow commands in this channel (once any is allowed, only those are)",
        disallow_channel="Remove a channel from the allowed list", clear_channels="Allow every channel again",
        max_jobs="Jobs one member may have queued or running", cooldown="Seconds between two jobs of one member",
        ban_word="Refuse prompts, labels and searches containing this word", unban_word="Remove a banned word",
        hall_of_fame_channel="Where generations reaching the threshold are reposted",
        hall_of_fame_threshold="👍 votes needed for the hall of fame",
        vote_up="Up-vote reaction emoji", vote_down="Down-vote reaction emoji",
        daily_quota="Generations one member may start per UTC day (0 = unlimited)",
        quota_exempt_role="Members with this role have no daily quota",
        clear_quota_exempt_role="No role is exempt from the daily quota",
        safety_labels="Comma-separated labels the safety check flags; 'off' to turn it off, 'default' for the bot's",
        safety_threshold="Probability at which a safety label flags an image (0.01 to 1)",
        self_votes="Count a member's vote on their own generation (default: no)")
    @app_commands.default_permissions(manage_guild=True)
    @app_commands.checks.has_permissions(manage_guild=True)
    @app_commands.guild_only()
    async def config(self, interaction: discord.Interaction,
                     allow_channel: discord.TextChannel | None = None,
                     disallow_channel: discord.TextChannel | None = None,
                     clear_channels: bool = False,
                     max_jobs: app_commands.Range[int, 1, 100] | None = None,
                     cooldown: app_commands.Range[int, 0, 3600] | None = None,
                     ban_word: app_commands.Range[str, 1, 50] | None = None,
                     unban_word: str | None = None,
                     hall_of_fame_channel: discord.TextChannel | None = None,
                     hall_of_fame_threshold: app_commands.Range[int, 1, 1000] | None = None,
                     vote_up: app_commands.Range[str, 1, 64] | None = None,
                     vote_down: app_commands.Range[str, 1, 64] | None = None,
                     daily_quota: app_commands.Range[int, 0, 100_000] | None = None,
                     quota_exempt_role: discord.Role | None = None,
                     clear_quota_exempt_role: bool = False,
                     safety_labels: app_commands.Range[str, 1, 2600] | None = None,
                     safety_threshold: app_commands.Range[float, 0.01, 1.0] | None = None,
                     self_votes: bool | None = None) -> None:
        store = self.bot.configs
        cfg = await store.get(interaction.guild_id)
        changes: dict = {}
        chans = list(cfg.allowed_channels)
        if clear_channels:
            chans = []
        if allow_channel and allow_channel.id not in chans:
            chans.append(allow_channel.id)
        if disallow_channel and disallow_channel.id in chans:
            chans.remove(disallow_channel.id)
        changes["allowed_channels"] = chans
        words = [w for w in cfg.banned_words if not (unban_word and w.casefold() == unban_word.strip().casefold())]
        if ban_word and ban_word.strip().casefold() not in {w.casefold() for w in words}:
            words.append(ban_word.strip())
        changes["banned_words"] = words
        for key, value in (("max_jobs", max_jobs), ("cooldown_s", cooldown), ("hof_threshold", hall_of_fame_threshold),
                           ("vote_up", vote_up and vote_up.strip()), ("vote_down", vote_down and vote_down.strip())):
            if value is not None:
                changes[key] = value
        if self_votes is not None:
            changes["self_votes"] = self_votes
        if hall_of_fame_channel is not None:
            changes["hof_channel"] = hall_of_fame_channel.id
        if daily_quota is not None:
            changes["daily_quota"] = daily_quota
        if clear_quota_exempt_role:
            changes["quota_exempt_role"] = None
        if quota_exempt_role is not None:
            changes["quota_exempt_role"] = quota_exempt_role.id
        if safety_threshold is not None:
            changes["safety_threshold"] = safety_threshold
        if safety_labels is not None:
            word = safety_labels.strip().casefold()
            try:
                changes["safety_labels"] = ([] if word == LABELS_OFF else None if word == LABELS_DEFAULT
                                            else parse_safety_labels(safety_labels))
            except ValueError as e:
                await self.bot.refuse(interaction, f"{e} Nothing was changed.")
                return
            if changes["safety_labels"] == [] and word != LABELS_OFF:
                await self.bot.refuse(interaction, "Those safety labels are empty; nothing was changed. "
                                                   f"To turn the check off, use `{LABELS_OFF}`.")
                return
        cfg = GuildConfig.model_validate({**cfg.model_dump(), **changes})
        await store.put(interaction.guild_id, cfg)
        await interaction.response.send_message(describe(cfg, self.bot), ephemeral=True,
                                                allowed_mentions=discord.AllowedMentions.none())


async def setup(bot: ClipBot) -> None:
    await bot.add_cog(Config(bot))
