"""The proto ItemKind enum ↔ the domain's kind names ("creator" | "post"), defined once for every service."""

from __future__ import annotations

from typing import Final

from kindred.v1 import common_pb2

KIND_NAMES: Final[dict[common_pb2.ItemKind, str]] = {
    common_pb2.ITEM_KIND_CREATOR: "creator",
    common_pb2.ITEM_KIND_POST: "post",
}
KIND_TO_PROTO: Final[dict[str, common_pb2.ItemKind]] = {name: kind for kind, name in KIND_NAMES.items()}


def kind_to_proto(name: str) -> common_pb2.ItemKind:
    """The proto enum for a domain kind name; ITEM_KIND_UNSPECIFIED for anything else."""
    return KIND_TO_PROTO.get(name, common_pb2.ITEM_KIND_UNSPECIFIED)
