"""Generated from protos/kindred/v1 by `make protos`; never edit by hand."""
