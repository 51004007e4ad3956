"""The catalogue on disk: `<data_dir>/catalogue/{fans,creators,posts,friends}.jsonl`, one record a line.

Written by the generator and the public-data loaders, read by the trainer, the indexer and the services.
Files are replaced atomically (write to a temporary name, fsync, rename) so a reader never sees half a
catalogue file.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from kindred.data.schema import Creator, Fan, Friendship, Post

FILES = {
    "fans": "fans.jsonl",
    "creators": "creators.jsonl",
    "posts": "posts.jsonl",
    "friendships": "friends.jsonl",
}


class _Record(Protocol):
    def to_dict(self) -> dict[str, Any]: ...


R = TypeVar("R")


@dataclass
class Catalogue:
    fans: list[Fan] = field(default_factory=list)
    creators: list[Creator] = field(default_factory=list)
    posts: list[Post] = field(default_factory=list)
    friendships: list[Friendship] = field(default_factory=list)

    @staticmethod
    def directory(data_dir: Path) -> Path:
        return Path(data_dir) / "catalogue"

    @classmethod
    def exists(cls, data_dir: Path) -> bool:
        return (cls.directory(data_dir) / FILES["creators"]).is_file()

    @classmethod
    def load(cls, data_dir: Path) -> Catalogue:
        """Reads the four files; a missing file reads as empty (e.g. no posts in a real data set)."""
        directory = cls.directory(data_dir)
        if not directory.is_dir():
            raise FileNotFoundError(f"no catalogue under {directory} (run `kindred generate` first)")
        return cls(
            fans=list(_read_jsonl(directory / FILES["fans"], Fan.from_dict)),
            creators=list(_read_jsonl(directory / FILES["creators"], Creator.from_dict)),
            posts=list(_read_jsonl(directory / FILES["posts"], Post.from_dict)),
            friendships=list(_read_jsonl(directory / FILES["friendships"], Friendship.from_dict)),
        )

    def write(self, data_dir: Path) -> Path:
        """Writes all four files; returns the catalogue directory."""
        directory = self.directory(data_dir)
        directory.mkdir(parents=True, exist_ok=True)
        _write_jsonl(directory / FILES["fans"], self.fans)
        _write_jsonl(directory / FILES["creators"], self.creators)
        _write_jsonl(directory / FILES["posts"], self.posts)
        _write_jsonl(directory / FILES["friendships"], self.friendships)
        return directory

    # Lookups built on demand; the catalogue is a plain value, so callers cache these if they need to.
    def creators_by_id(self) -> dict[str, Creator]:
        return {c.creator_id: c for c in self.creators}

    def fans_by_id(self) -> dict[str, Fan]:
        return {f.fan_id: f for f in self.fans}

    def posts_by_id(self) -> dict[str, Post]:
        return {p.post_id: p for p in self.posts}

    def posts_by_creator(self) -> dict[str, list[Post]]:
        """Each creator's posts, oldest first."""
        by_creator: dict[str, list[Post]] = defaultdict(list)
        for post in sorted(self.posts, key=lambda p: (p.published_at, p.post_id)):
            by_creator[post.creator_id].append(post)
        return dict(by_creator)

    def friends_of(self) -> dict[str, set[str]]:
        """The friendship graph made symmetric: fan_id → friends' ids."""
        graph: dict[str, set[str]] = defaultdict(set)
        for f in self.friendships:
            graph[f.fan_id].add(f.friend_id)
            graph[f.friend_id].add(f.fan_id)
        return dict(graph)

    def summary(self) -> Mapping[str, int]:
        return {
            "fans": len(self.fans),
            "creators": len(self.creators),
            "posts": len(self.posts),
            "friendships": len(self.friendships),
        }


def _read_jsonl(path: Path, parse: Callable[[dict[str, Any]], R]) -> Iterator[R]:
    if not path.is_file():
        return
    with path.open(encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                yield parse(json.loads(line))
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"{path}:{line_no}: bad record: {exc}") from exc


def _write_jsonl(path: Path, records: Iterable[_Record]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for record in records:
            fh.write(json.dumps(record.to_dict(), ensure_ascii=False, separators=(",", ":")))
            fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
