"""The pipeline's stages as plain functions: what each reads is passed in, what it makes is
written to the run folder and returned. ``pipeline.py`` decides their order and what to keep."""
