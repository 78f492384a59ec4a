"""The built-in stage plugins. Each module registers through the clood_candy entry-point group, as a third-party plugin would."""
