"""The Kindred trainer: Ray pipelines and model code (the only package that imports torch or ray).

`python -m trainer train --data-dir D [--config tiny|default]` runs `trainer.pipeline.run`; the pieces
(`datasets`, `two_tower`, `ranker`, `evaluate`, `export`) are plain functions the tests call directly.
"""
