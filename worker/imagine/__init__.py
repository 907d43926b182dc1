"""VQGAN+CLIP generation (/imagine): see README.md in this folder.

Public API: `prompts.parse_prompts`, `vqgan.load_vqgan`, `engine.ImagineConfig`,
`engine.ImagineEngine`, `engine.imagine`, `handlers.build`, `cli.add_imagine_arguments`/`imagine_main`.
Nothing is imported here, so `import worker.imagine.prompts` stays free of torch.
"""
