"""VQGAN+CLIP generation (/imagine): see README.md in this folder.

Public API: `vqgan.load_vqgan`, `engine.ImagineEngine`, `engine.imagine`, `variations.VariationsEngine`,
`variations.imagine`, `handlers.build`, `cli.add_imagine_arguments`/`imagine_main`. The knobs (`ImagineConfig`) live in jobs/settings.py and
the prompt parser in jobs/validation/prompts.py, both shared with the bot.
"""
