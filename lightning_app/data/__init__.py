"""Data: sources, split manifest, validation and the DataModule."""
