"""The thought tree one planner grows: every node in memory, indexed, persisted as it changes.

The planner that holds a tree's lease is its only writer, so the tree it keeps in memory is
the truth and Redis a copy kept in step: changes are queued (`set_status`, `record_scores`,
`visit`, `event`) and sent with the next expansion's new nodes, or by `flush`, as one atomic
batch (`TreeStore.write`). Lookups that a search makes at every step - children of a node,
nodes of a status, the path to a node - use indexes, so their cost does not grow with the
tree. A planner that takes over a dead one's tree rebuilds the same indexes from Redis.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from cluster.store import NodeDraft, NodeStatus, ThoughtNode, TreeNotFoundError, TreeStore, TreeWrite
from cluster.store.nodes import node_order
from cluster.tasks.steps import StepFormat
from cluster.types import Candidate


@dataclass(frozen=True, slots=True)
class Chain:
    """A chain of thought ending at a tree node: a whole chain, or the path to a step.

    `text` is the path's steps joined as the model wrote them, `path` the node ids from the
    root.
    """

    node: ThoughtNode
    answer: str | None
    finish_reason: str | None
    text: str
    path: tuple[str, ...]
    # Whether anything can still grow from it (tree search); whole chains are finished.
    terminal: bool = True

    def candidate(self) -> Candidate:
        return Candidate(self.node.node_id, self.text, self.answer)


class SearchTree:
    def __init__(self, tree_id: str, store: TreeStore, steps: StepFormat, fence: str | None = None) -> None:
        self.tree_id = tree_id
        self._store = store
        self._steps = steps
        # The planner's lease token: every write is refused once another planner took over.
        self._fence = fence
        self._nodes: dict[str, ThoughtNode] = {}
        self._children: dict[str, list[str]] = {}
        self._by_status: dict[str, set[str]] = {}
        self._root: ThoughtNode | None = None
        self._deepest = 0
        self._pending = TreeWrite()
        # One batch in flight at a time, so Redis applies them in the order they were made.
        self._writing = asyncio.Lock()

    # -- growing --

    async def start(self, question: str) -> ThoughtNode:
        """Write the root node: the problem as posed to the model."""
        (root,) = await self.add_children(None, [NodeDraft(text=question, status="expanded")])
        return root

    async def load(self) -> bool:
        """Rebuild the indexes from the stored tree of a planner that died; False if it has no root."""
        stored = await self._store.get_tree(self.tree_id)
        if stored is None:
            raise TreeNotFoundError(self.tree_id)
        for node in stored.nodes:
            self._index(node)
        return self._root is not None

    async def add_children(
        self, parent: ThoughtNode | None, drafts: Sequence[NodeDraft]
    ) -> list[ThoughtNode]:
        """Write new children of `parent` (the root when None) together with every queued change."""
        if parent is not None and self._nodes[parent.node_id].status == "open" and not drafts:
            # Asked and nothing came back: nothing more will come from asking again.
            self.set_status([parent.node_id], "expanded")
        async with self._writing:
            batch = self._pending.take()
            batch.parent_id = None if parent is None else parent.node_id
            batch.drafts = list(drafts)
            nodes = await self._store.write(self.tree_id, batch, self._fence)
        if parent is not None and self._nodes[parent.node_id].status == "open":
            self._set(replace(self._nodes[parent.node_id], status="expanded"))
        for node in nodes:
            self._index(node)
        return nodes

    async def flush(self) -> None:
        """Send the queued changes (one round trip; none when nothing is queued)."""
        async with self._writing:
            if self._pending.is_empty():
                return
            await self._store.write(self.tree_id, self._pending.take(), self._fence)

    def set_status(self, node_ids: Iterable[str], status: NodeStatus) -> None:
        for node_id in node_ids:
            self._set(replace(self._nodes[node_id], status=status))
            self._pending.set_status(node_id, status)

    def record_scores(
        self, node_id: str, score: float, scores: Mapping[str, float], reasons: Mapping[str, str]
    ) -> ThoughtNode:
        node = self._nodes[node_id]
        updated = replace(
            node,
            score=score,
            scores={**node.scores, **scores},
            verdicts={**node.verdicts, **reasons},
        )
        self._set(updated)
        self._pending.set_scores(node_id, score, scores, reasons)
        return updated

    def visit(self, path: Sequence[ThoughtNode], value: float) -> None:
        """Count one evaluation of `value` on every node of `path` (MCTS statistics)."""
        for node in path:
            current = self._nodes[node.node_id]
            self._set(replace(current, visits=current.visits + 1, value_sum=current.value_sum + value))
        self._pending.visit([node.node_id for node in path], value)

    def event(self, kind: str, data: Mapping[str, Any]) -> None:
        """A progress event, sent with the next batch."""
        self._pending.event(kind, data)

    # -- reading --

    @property
    def root(self) -> ThoughtNode:
        if self._root is None:
            raise RuntimeError(f"tree {self.tree_id} has no root yet: start() or load() it first")
        return self._nodes[self._root.node_id]

    def node(self, node_id: str) -> ThoughtNode:
        return self._nodes[node_id]

    def __len__(self) -> int:
        return len(self._nodes)

    @property
    def deepest(self) -> int:
        return self._deepest

    def children(self, node: ThoughtNode) -> list[ThoughtNode]:
        """Children in creation order."""
        return [self._nodes[i] for i in self._children.get(node.node_id, ())]

    def with_status(self, status: NodeStatus) -> list[ThoughtNode]:
        """The nodes of one status, in creation order."""
        return [self._nodes[i] for i in sorted(self._by_status.get(status, ()), key=node_order)]

    def count(self, status: NodeStatus) -> int:
        return len(self._by_status.get(status, ()))

    def steps(self) -> list[ThoughtNode]:
        """Every node but the root, in creation order."""
        return [node for node in self._nodes.values() if node.parent_id is not None]

    def open_steps(self) -> list[ThoughtNode]:
        """Steps waiting to be expanded."""
        return [n for n in self.with_status("open") if n.parent_id is not None]

    def expanded_steps(self) -> list[ThoughtNode]:
        """Unfinished steps that were expanded before (the root is not a step)."""
        return [n for n in self.with_status("expanded") if n.parent_id is not None and n.answer is None]

    def path_to(self, node: ThoughtNode) -> list[ThoughtNode]:
        """The nodes from the root's first child down to `node`."""
        path = []
        current: ThoughtNode | None = self._nodes[node.node_id]
        while current is not None and current.parent_id is not None:
            path.append(current)
            current = self._nodes.get(current.parent_id)
        return path[::-1]

    def chain(self, node: ThoughtNode) -> Chain:
        node = self._nodes[node.node_id]
        path = self.path_to(node)
        return Chain(
            node=node,
            answer=node.answer,
            finish_reason="stop" if node.answer is not None else "length",
            text=self._steps.chain_text([n.text for n in path]),
            path=(self.root.node_id, *(n.node_id for n in path)),
            terminal=node.status != "open",
        )

    def pruned(self, chain: Chain) -> bool:
        return self._nodes[chain.node.node_id].status == "pruned"

    def status_counts(self) -> Counter[str]:
        return Counter({status: len(ids) for status, ids in self._by_status.items()})

    # -- indexes --

    def _index(self, node: ThoughtNode) -> None:
        if node.parent_id is None:
            self._root = node
        else:
            # Nodes arrive in creation order (new ones in id order, a loaded tree sorted).
            if node.node_id not in self._nodes:
                self._children.setdefault(node.parent_id, []).append(node.node_id)
        self._deepest = max(self._deepest, node.depth)
        self._set(node)

    def _set(self, node: ThoughtNode) -> None:
        previous = self._nodes.get(node.node_id)
        if previous is not None:
            self._by_status[previous.status].discard(node.node_id)
        self._by_status.setdefault(node.status, set()).add(node.node_id)
        self._nodes[node.node_id] = node
