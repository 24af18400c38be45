"""The run spec: everything that shapes a result, hashed into the run id.

Task (name, version, config) x method (name, args) x model identity (source, weights sha256,
dtype, parameter count, chat-template hash, context length) x the identities of any second
models (judge, reference, teacher) x seed x chat-template use x sample selection x harness
version. Batch size and device are recorded with the results
but are not part of the id, so an interrupted run can resume with other resources.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from harness.api import Doc


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True)
class Selection:
    """Which documents a run covers: all, or a seeded random subset of ``limit``.

    The subset is the first ``limit`` of a permutation drawn from ``seed`` alone, so it is
    identical across methods and models (paired comparisons), and a smaller limit is a
    subset of a larger one. Documents keep their dataset order.
    """

    limit: int | None
    seed: int
    n_total: int
    doc_ids: tuple[str, ...]

    @property
    def doc_ids_sha256(self) -> str:
        return hashlib.sha256("\n".join(self.doc_ids).encode()).hexdigest()

    def as_dict(self) -> dict[str, Any]:
        return {
            "limit": self.limit, "seed": self.seed, "n_total": self.n_total, "n_selected": len(self.doc_ids),
            "doc_ids_sha256": self.doc_ids_sha256, "doc_ids": list(self.doc_ids),
        }


def select(docs: Sequence[Doc], limit: int | None, seed: int) -> tuple[list[Doc], Selection]:
    if limit is None or limit >= len(docs):
        chosen = list(docs)
    else:
        order = np.random.default_rng(seed).permutation(len(docs))[:limit]
        chosen = [docs[i] for i in sorted(order.tolist())]
    return chosen, Selection(limit, seed, len(docs), tuple(d.id for d in chosen))


@dataclass(frozen=True)
class RunSpec:
    harness_version: str
    task: dict[str, Any]  # name, version, config
    method: dict[str, Any]  # name, args
    model: dict[str, Any]  # ModelIdentity
    seed: int
    chat_template: bool
    selection: dict[str, Any]
    # Second models (a task's judge, a method's reference or teacher): role -> identity. Left
    # out of the hash when there are none, so runs with no second model keep their ids.
    auxiliary: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        spec = asdict(self)
        if not self.auxiliary:
            del spec["auxiliary"]
        return spec

    @property
    def run_id(self) -> str:
        return hashlib.sha256(canonical_json(self.as_dict()).encode()).hexdigest()[:16]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunSpec:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})
