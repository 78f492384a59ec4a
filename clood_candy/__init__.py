"""clood candy: train a jellybean LoRA from your own photos, and learn how it works."""

__version__ = "0.1.0"
