"""The .xrf recipe language (see the recipe issue)."""
