"""Data for Kindred: catalogue records, the generated platform and loaders for the public data sets."""
