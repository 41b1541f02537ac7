"""cvpipe: staged computer-vision pipelines declared in YAML."""

__version__ = "0.1.0"
